"""Smoothed Energy Guidance (Hong, NeurIPS 2024), backend-independent.

The same extra pass as PAG (lib_sloth.perturbed), but the chosen layers keep their attention and
blur their *queries* with a 2-D Gaussian of std `blur_sigma` over the layer's token grid (latent
cells at the layer's own resolution). Blurring the queries blurs the attention logits over the
query axis; as sigma grows every query tends to the mean query and the attention stops depending
on where the query sits. sigma = 0 leaves the queries unchanged; `SIGMA_INF` (the top of the
range) replaces them by their mean, the reference's default ("infinite blur").

Kernel as the authors' reference (SusungHong/SEG-SDXL, pipeline_seg.py): ceil(6 sigma) + 1 taps
rounded down to odd, clipped so the reflect padding fits the grid; here per axis, so non-square
and odd grids work too. Sources and choices: docs/guidance-notes.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from einops import rearrange

from .attention import attend
from .blur import gaussian_taps, separable_blur
from .fields import setting
from .perturbed import PerturbedGuidance, PerturbedSettings

SIGMA_INF = 100.0  # blur_sigma at (or above) this is infinite: every query becomes the mean query


@dataclass(frozen=True)
class SegSettings(PerturbedSettings):
    enabled: bool = setting(False, hint="Smoothed Energy Guidance: one more UNet pass on the cond rows per guided "
                                        "step, queries of the chosen layers blurred; steer it with the blur, not "
                                        "the scale")
    blur_sigma: float = setting(SIGMA_INF, 0.0, SIGMA_INF,
                                hint=f"Query blur in latent cells of each layer's grid; {SIGMA_INF:g} = infinite "
                                     "(the authors' default); 0 = no blur (off); try 1, 4, 16 ...")

    @property
    def active(self) -> bool:
        return super().active and self.blur_sigma > 0


def kernel_taps(sigma: float, side: int) -> Optional[torch.Tensor]:
    """The 1-D kernel along an axis of `side` tokens, or None when it is a single tap.

    ceil(6 sigma) + 1 taps, minus one when that is even (odd, covering +-3 sigma), at most `side`
    (odd side) or side + 1 (even side): the reflect padding of kernel // 2 stays inside the grid.
    """
    span = math.ceil(6 * sigma)
    size = min(span + 1 - span % 2, side if side % 2 else side + 1)
    if size <= 1:
        return None
    return gaussian_taps(sigma, size // 2)


def blur_queries(q: torch.Tensor, grid_hw, sigma: float) -> torch.Tensor:
    """q [B, N, C] blurred per channel over its h x w token grid (N = h * w, rows first).

    sigma <= 0 returns q itself; sigma >= SIGMA_INF replaces every token by the mean over the tokens.
    """
    if sigma <= 0:
        return q
    h, w = grid_hw
    if h * w != q.shape[1]:
        raise ValueError(f"grid {h}x{w} does not hold the layer's {q.shape[1]} tokens")
    if sigma >= SIGMA_INF:
        return q.mean(dim=1, keepdim=True).expand_as(q)
    img = rearrange(q, "b (h w) c -> b c h w", h=h, w=w)
    img = separable_blur(img, kernel_taps(sigma, h), kernel_taps(sigma, w))
    return rearrange(img, "b c h w -> b (h w) c")


def smoothed_attention(layer, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, grid_hw, sigma: float,
                       upcast: bool = False) -> torch.Tensor:
    """The perturbed layer's attention output before to_out [B, N, heads*d]: full attention with the
    queries blurred. x [B, N, C] (queries from it), k_in / v_in what K and V are computed from."""
    q = blur_queries(layer.to_q(x), grid_hw, sigma)
    return attend(q, layer.to_k(k_in), layer.to_v(v_in), layer.heads, upcast)


class SegPass(PerturbedGuidance):
    """SEG for one sampling pass (lib_sloth.perturbed.PerturbedGuidance): the chosen layers blur their queries."""

    name = "SEG"
    method = "seg"
    needs_grid = True

    def perturbed_attention(self, layer, x, k_in, v_in, grid, upcast):
        return smoothed_attention(layer, x, k_in, v_in, grid, self.settings.blur_sigma, upcast)
