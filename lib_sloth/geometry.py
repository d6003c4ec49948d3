"""Token grids: recover a layer's h x w from its token count and the latent size of the UNet call.

The ldm/sgm UNet downsamples with stride-2 convolutions (padding 1), so a level with
downsample d has a grid of ceil(H/d) x ceil(W/d) latent cells for a latent of H x W.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

MAX_DOWNSAMPLE_LOG2 = 7
SNAP_EPS = 1e-9  # far below the gap between a non-integer slider-grid value and the next integer


def snap(x: float, eps: float = SNAP_EPS) -> float:
    """x, or the integer it lies within eps of.

    Floats stand for decimal slider values (0.9 is 0.9000000000000000222...), so a rule that is
    exactly an integer can come out a hair above it (18 / 0.8999999999999999 = 20.000000000000004),
    and ceil then picks the next window. Every float that becomes a window, stride or tile size
    goes through here first.
    """
    n = round(x)
    return float(n) if abs(x - n) <= eps else x


def ceil_snapped(x: float) -> int:
    return math.ceil(snap(x))


def grid_for_tokens(tokens: int, latent_hw: Tuple[int, int]) -> Optional[Tuple[int, int, int]]:
    """(h, w, downsample) of a layer with `tokens` tokens, or None when no power-of-2 level fits.

    None happens when something upstream changed the token count (e.g. another extension's
    token merging); callers then leave the layer alone.
    """
    H, W = latent_hw
    for k in range(MAX_DOWNSAMPLE_LOG2 + 1):
        d = 2 ** k
        h, w = -(-H // d), -(-W // d)
        if h * w == tokens:
            return h, w, d
        if h * w < tokens:
            return None
    return None


def window_2d(stride: float, h: int, w: int) -> Tuple[int, int]:
    """(sy, sx) window for a 2D reduction by `stride` on an h x w grid.

    sy = min(ceil(sqrt(s)), h) first, then sx = min(ceil(s / sy), w) from the clipped sy, as the
    original node does: a grid too short for a square window gets a wider one, so the reduction
    stays close to s (32 x 128 latent, level 3 grid 4 x 16, s = 20: (4, 5), not (4, 4)).
    """
    stride = snap(stride)
    sy = min(ceil_snapped(math.sqrt(stride)), h)
    sx = min(ceil_snapped(stride / sy), w)
    return sy, sx


def window_1d(stride: float, n: int) -> int:
    return min(ceil_snapped(stride), n)
