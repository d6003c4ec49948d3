"""SAG's map capture: the recorded layer's full self-attention, with an explicit fp32 softmax
map kept for the uncond rows only. Used by SagPass (lib_sloth.sag) through its MapRecordingPlan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from einops import rearrange

from .attention import attend, autocast_off

Rows = Union[slice, Sequence[int]]

# The layer whose map SAG reads: the first self-attention of the middle block (diffusers'
# mid_block.attentions[0].transformer_blocks[0].attn1; ComfyUI's ("middle", 0, 0)).
RECORDED_BLOCK, RECORDED_INDEX = "middle", 0


@dataclass(frozen=True)
class SagMap:
    """The uncond rows' softmax map of the recorded layer, for one model call."""

    probs: torch.Tensor  # [rows*heads, N, N] fp32, image-major then head
    heads: int
    rows: int  # uncond images it covers
    grid: Optional[Tuple[int, int]]  # (h, w) of the N tokens when the patch knew it, else None

    @property
    def nbytes(self) -> int:
        return self.probs.numel() * self.probs.element_size()


def resolve_rows(rows: Rows, batch: int) -> List[int]:
    """Row indices (ascending, non-negative) of a call with `batch` rows; [] when none fall in it."""
    if isinstance(rows, slice):
        return list(range(batch))[rows]
    out = []
    for r in rows:
        r = int(r)
        r = r + batch if r < 0 else r
        if not 0 <= r < batch:
            raise IndexError(f"uncond row {r} outside a model call of {batch} rows")
        out.append(r)
    return sorted(set(out))


def attention_with_map(module, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, rows: List[int],
                       upcast: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Full self-attention of x [B, N, C] through `module`'s projections, K from k_in and V from
    v_in (x itself for a plain layer); the map of `rows` too.

    Returns (out [B, N, heads*d] in x's dtype, before to_out; probs [len(rows)*heads, N, N] fp32).
    Only `rows` pay for an explicit fp32 map; the other rows take the fused kernel. The explicit
    softmax runs in place so the peak is one map, not two (it is the largest tensor SAG holds).
    """
    heads = module.heads
    q, k, v = module.to_q(x), module.to_k(k_in), module.to_v(v_in)
    out = torch.empty_like(q)
    keep = set(rows)
    others = [i for i in range(x.shape[0]) if i not in keep]
    if others:
        out[others] = attend(q[others], k[others], v[others], heads, upcast)
    # autocast (A1111 samples under it on CUDA) would run the bmm in fp16: the map must be fp32
    with autocast_off(x.device.type):
        qr, kr, vr = (rearrange(t[rows].float(), "b n (h d) -> (b h) n d", h=heads) for t in (q, k, v))
        probs = torch.bmm(qr, kr.transpose(1, 2)).mul_(qr.shape[-1] ** -0.5)  # [rows*heads, N, N]
        del qr, kr
        probs -= probs.amax(dim=-1, keepdim=True)
        probs.exp_()
        probs /= probs.sum(dim=-1, keepdim=True)
        out[rows] = rearrange(torch.bmm(probs, vr), "(b h) n d -> b n (h d)", h=heads).to(out.dtype)
    return out, probs
