"""Slothful Attention: fewer K/V tokens in self-attention, by pooling the hidden states.

K and V are projections without bias, so pooling the hidden states before to_k/to_v is the
same as pooling K/V for AVG and cheaper. Q keeps every token: the output shape never changes.
Windows at the right/bottom edge that do not fill a whole stride are kept, pooled over their
in-grid cells, so K/V count = ceil(h/sy) * ceil(w/sx).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .attention import attend
from .fields import Validated, nested, setting
from .geometry import snap, window_1d, window_2d
from .layer_call import LayerCall, Plan
from .schedule import depth_ratio, time_ratio

POOL_MODES = ("1D_AVG", "1D_MAX", "2D_AVG", "2D_MAX")


@dataclass(frozen=True)
class PoolBlock(Validated):
    """How one group of UNet blocks (input or output) reduces its self-attention K/V tokens.

    Shared by Slothful Attention and Near-sighted Attention.
    """

    mode: str = setting("2D_AVG", choices=POOL_MODES,
                        hint="2D pools square-ish windows of the image; 1D pools runs of the token row order")
    slothful: float = setting(6.0, 0.0, 50.0,
                              hint="Higher = fewer K/V tokens: faster, softer; 1 or less = off; try 4-8")
    depth_decay: float = setting(2.0, 0.0, 4.0,
                                 hint="How fast the strength falls with depth: each level divides it by 2^decay")
    k_blend: float = setting(0.0, 0.0, 1.0,
                             hint="Keys: 0 = pick one token per window, 1 = pooled window; higher can reduce noise")
    v_blend: float = setting(0.0, 0.0, 1.0,
                             hint="Values: 0 = pick one token per window, 1 = pooled window; AVG softens, MAX hardens")


def output_pool_block() -> PoolBlock:
    return PoolBlock(slothful=4.0)


@dataclass(frozen=True)
class SlothfulSettings(Validated):
    enabled: bool = setting(False, hint="Reduce the keys/values of self-attention by pooling")
    peak_time: float = setting(0.4, 0.0, 1.0,
                               hint="Point of the schedule (0 = first step, 1 = last) where the effect is strongest")
    time_decay: float = setting(2.0, 0.0, 4.0,
                                hint="How fast the effect fades away from the peak; 0 = same strength at every step")
    keep_middle: bool = setting(True, hint="Leave the middle block untouched")
    input: PoolBlock = nested(PoolBlock, "Input (down) blocks")
    output: PoolBlock = nested(output_pool_block, "Output (up) blocks")

    @property
    def active(self) -> bool:
        """Whether these settings can change the UNet's output (a strength of 1 or less pools nothing)."""
        return self.enabled and max(self.input.slothful, self.output.slothful) > 1


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

    @property
    def picks_only(self) -> bool:
        """K and V both take the strided pick (no pooled window): nothing needs pooling."""
        return self.k_blend == 0 and self.v_blend == 0

    def tokens_left(self, h: int, w: int) -> int:
        """K/V tokens this reduction leaves of an h x w grid (what `reduce_tokens` returns)."""
        sy, sx = self.window
        if self.mode.startswith("2D"):
            return math.ceil(h / sy) * math.ceil(w / sx)
        return math.ceil(h * w / sx)


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
    """Strength scaled by time and depth, snapped to an integer within 1e-9 (geometry.snap): the
    `<= 1` test and the window must not flip on representation error."""
    return snap(block.slothful * time_ratio(prog, peak_time, time_decay) * depth_ratio(level, block.depth_decay))


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
    # work on the [B, rows, cols, C] view of x: picking copies only the picked tokens, and the
    # pooling reads x in place (channels-last); no transposed copy of the whole grid
    rows = x.reshape(b, h, w, c) if pooling.mode.startswith("2D") else x.reshape(b, 1, n, c)
    sy, sx = pooling.window
    pick = rows[:, ::sy, ::sx]
    pooled = None
    if not pooling.picks_only:
        pooled = _pool_grid(rows.permute(0, 3, 1, 2), pooling.window, pooling.mode.endswith("MAX")).permute(0, 2, 3, 1)
    return blended_sources(pick, pooled, pooling.k_blend, pooling.v_blend)


def blended_sources(pick: torch.Tensor, pooled: Optional[torch.Tensor], k_blend: float, v_blend: float
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(k_src, v_src) [B, M, C] from a pick and its pooled windows [B, rows, cols, C]: each is
    lerp(pick, pooled, its blend). A blend of 0 is the pick itself (pooled may then be None)."""
    b, c = pick.shape[0], pick.shape[-1]

    def blend(weight: float) -> torch.Tensor:
        src = pick if weight == 0 else (pooled if weight == 1 else torch.lerp(pick, pooled, weight))
        return src.reshape(b, -1, c)

    k_src = blend(k_blend)
    v_src = k_src if v_blend == k_blend else blend(v_blend)
    return k_src, v_src


def kv_sources(x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, reduce) -> Tuple[torch.Tensor, torch.Tensor]:
    """(k_src, v_src) by `reduce(t) -> (k_src, v_src)`: once when K and V come from x itself, else
    keys from k_in and values from v_in (an A1111 hypernetwork), each reduced the same way."""
    if k_in is x and v_in is x:
        return reduce(x)
    return reduce(k_in)[0], reduce(v_in)[1]


def slothful_attention(module, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, h: int, w: int,
                       pooling: Pooling, upcast: bool) -> torch.Tensor:
    """Self-attention of every token of x [B, h*w, C] over the reduced K/V; before to_out."""
    k_src, v_src = kv_sources(x, k_in, v_in, lambda t: reduce_tokens(t, h, w, pooling))
    return attend(module.to_q(x), module.to_k(k_src), module.to_v(v_src), module.heads, upcast)


@dataclass(frozen=True)
class SlothfulPlan(Plan):
    """Every query of an h x w layer attends to the reduced K/V of `pooling`."""

    h: int
    w: int
    pooling: Pooling

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(slothful_attention(layer, x, k_in, v_in, self.h, self.w, self.pooling, upcast))

    def keys_per_query(self, h: int, w: int) -> float:
        return float(self.pooling.tokens_left(h, w))


# ---- planning ---------------------------------------------------------------------------------
def pool_block_for(block: str, keep_middle: bool, input_block: PoolBlock, output_block: PoolBlock
                   ) -> Optional[PoolBlock]:
    """The pooling settings of a UNet block group; None for a kept middle block."""
    if block == "output":
        return output_block
    if block == "middle" and keep_middle:
        return None
    return input_block  # the middle block, when not kept, uses the input settings


def plan_slothful(s: SlothfulSettings, call: LayerCall) -> Optional[SlothfulPlan]:
    if not s.enabled:
        return None
    block = pool_block_for(call.block, s.keep_middle, s.input, s.output)
    if block is None:
        return None
    stride = layer_stride(block, call.level, call.progress, s.peak_time, s.time_decay)
    pooling = pooling_for(block, stride, call.h, call.w)
    if pooling is None:
        return None
    return SlothfulPlan(call.h, call.w, pooling)


def idle_reason(s: SlothfulSettings, calls) -> str:
    """Why Slothful rewrote none of `calls` (LayerCalls of one pass), in the user's words."""
    strengths = [layer_stride(b, c.level, c.progress, s.peak_time, s.time_decay)
                 for c in calls for b in [pool_block_for(c.block, s.keep_middle, s.input, s.output)] if b]
    if strengths and max(strengths) <= 1:
        return (f"its strength after time and depth decay stayed at or below 1 (at most {max(strengths):.3g}); "
                "raise the strength or lower the decays")
    return "no layer of this image has a window larger than one token"
