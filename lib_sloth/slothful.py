"""Slothful Attention: fewer K/V tokens in self-attention, by pooling the hidden states.

K and V are projections without bias, so pooling the hidden states before to_k/to_v is the
same as pooling K/V for AVG and cheaper. Q keeps every token: the output shape never changes.
Windows at the right/bottom edge that do not fill a whole stride are kept, pooled over their
in-grid cells, so K/V count = ceil(h/sy) * ceil(w/sx).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .attention import attend
from .geometry import window_1d, window_2d
from .schedule import depth_ratio, time_ratio
from .settings import PoolBlock


@dataclass(frozen=True)
class Pooling:
    """One layer's reduction this step: mode, window and blends."""

    mode: str
    window: Tuple[int, int]  # (sy, sx); 1D modes use (1, s)
    k_blend: float
    v_blend: float

    @property
    def is_identity(self) -> bool:
        return self.window == (1, 1)


def pooling_for(block: PoolBlock, stride: float, h: int, w: int) -> Optional[Pooling]:
    """The reduction for `stride` (already scaled by time and depth); None when stride <= 1."""
    if stride <= 1:
        return None
    if block.mode.startswith("2D"):
        window = window_2d(stride, h, w)
    else:
        window = (1, window_1d(stride, h * w))
    pooling = Pooling(block.mode, window, block.k_blend, block.v_blend)
    return None if pooling.is_identity else pooling


def layer_stride(block: PoolBlock, level: int, prog: float, peak_time: float, time_decay: float) -> float:
    return block.slothful * time_ratio(prog, peak_time, time_decay) * depth_ratio(level, block.depth_decay)


def _pool_grid(x: torch.Tensor, window: Tuple[int, int], use_max: bool) -> torch.Tensor:
    """x: [B, C, h, w] -> [B, C, ceil(h/sy), ceil(w/sx)]; partial edge windows average their own cells."""
    if use_max:
        return F.max_pool2d(x, window, window, ceil_mode=True)
    return F.avg_pool2d(x, window, window, ceil_mode=True, count_include_pad=False)


def reduce_tokens(x: torch.Tensor, h: int, w: int, pooling: Pooling) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sources for K and V.

    x: [B, h*w, C] hidden states in row-major grid order -> (k_src, v_src), each [B, M, C] with
    M = ceil(h/sy)*ceil(w/sx) (2D) or ceil(h*w/s) (1D). Each is lerp(strided pick, pooled window, blend).
    """
    b, n, c = x.shape
    if pooling.mode.startswith("2D"):
        grid = x.transpose(1, 2).reshape(b, c, h, w)
    else:
        grid = x.transpose(1, 2).reshape(b, c, 1, n)
    sy, sx = pooling.window
    pick = grid[:, :, ::sy, ::sx]
    need_pool = pooling.k_blend > 0 or pooling.v_blend > 0
    pooled = _pool_grid(grid, pooling.window, pooling.mode.endswith("MAX")) if need_pool else None

    def blend(weight: float) -> torch.Tensor:
        src = pick if weight == 0 else (pooled if weight == 1 else torch.lerp(pick, pooled, weight))
        return src.flatten(2).transpose(1, 2)

    k_src = blend(pooling.k_blend)
    v_src = k_src if pooling.v_blend == pooling.k_blend else blend(pooling.v_blend)
    return k_src, v_src


def slothful_attention(module, x: torch.Tensor, h: int, w: int, pooling: Pooling, upcast: bool) -> torch.Tensor:
    """Self-attention of every token of x [B, h*w, C] over the reduced K/V; before to_out."""
    k_src, v_src = reduce_tokens(x, h, w, pooling)
    q = module.to_q(x)
    k = module.to_k(k_src)
    v = module.to_v(v_src)
    return attend(q, k, v, module.heads, upcast)
