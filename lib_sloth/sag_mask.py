"""SAG's degraded prediction: which latent cells the uncond's self-attention concentrates on,
and a Gaussian blur of exactly those cells. Pure tensor functions, no model involved.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .blur import gaussian_taps, separable_blur
from .geometry import ceil_snapped


def mid_grid(tokens: int, latent_hw: Tuple[int, int]) -> Tuple[int, int]:
    """(h, w) with h*w == tokens whose aspect best matches the latent's H x W.

    Picks the divisor h of `tokens` closest to sqrt(tokens * H / W) (ties -> the smaller h).
    No downsample factor and no size multiple is assumed, so SD1.x (/8), SDXL (/4), odd latents
    (ceil division in the UNet's stride-2 convs) and hidden states that another extension shrank
    by a non-power-of-2 factor (Kohya-style 1.5x) all resolve. Only the aspect ratio is used.
    """
    if tokens < 1:
        raise ValueError(f"tokens={tokens}: need at least one token")
    H, W = latent_hw
    target = math.sqrt(tokens * H / W)
    best = None
    for d in range(1, math.isqrt(tokens) + 1):
        if tokens % d:
            continue
        for h in (d, tokens // d):
            key = (abs(h - target), h)
            if best is None or key < best:
                best = key
    h = best[1]
    return h, tokens // h


def received_attention(attn_map: torch.Tensor, heads: int) -> torch.Tensor:
    """How much attention each key token receives, averaged over heads.

    attn_map: [B*heads, N, N] row-softmaxed (query, key), rows ordered image-major then head
    (the `(b h)` layout of ldm/sgm attention) -> [B, N] fp32. Each query hands out 1, so the
    values average to 1 over the keys: 1 is "as much as an average token".
    """
    bh, nq, nk = attn_map.shape
    if bh % heads:
        raise ValueError(f"attention map has {bh} rows, not a multiple of {heads} heads")
    # sum over queries before averaging heads: same result as mean-then-sum, without a [B, N, N] temporary
    per_head = attn_map.float().sum(dim=1)  # [B*heads, N]
    return per_head.reshape(bh // heads, heads, nk).mean(dim=1)


def attention_mask(attn_map: torch.Tensor, heads: int, latent_hw: Tuple[int, int], threshold: float,
                   grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Cells to blur: [B, 1, H, W] of 0.0/1.0 (fp32), nearest-upsampled from the map's grid.

    A key token is masked when it receives more than `threshold` attention (see
    received_attention). `grid` is the map's (h, w) when the caller knows it; otherwise it is
    recovered with mid_grid.
    """
    return mask_from_received(received_attention(attn_map, heads), latent_hw, threshold, grid)


def mask_from_received(received: torch.Tensor, latent_hw: Tuple[int, int], threshold: float,
                       grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """attention_mask from an already summed map: received [B, N] -> [B, 1, H, W] of 0.0/1.0."""
    b, n = received.shape
    h, w = grid if grid is not None else mid_grid(n, latent_hw)
    if h * w != n:
        raise ValueError(f"grid {h}x{w} does not hold the map's {n} tokens")
    mask = (received > threshold).float().reshape(b, 1, h, w)
    return F.interpolate(mask, size=tuple(latent_hw), mode="nearest")


def gaussian_kernel1d(sigma: float) -> Optional[torch.Tensor]:
    """Normalised 1D Gaussian [2*ceil(3*sigma)+1] (fp32), or None for sigma <= 0 (no blur).

    The taps cover +-3 sigma, at least 3. ComfyUI/Forge's SAG uses a fixed 9-tap kernel, the same
    as this one only for sigma in (1, 4/3]; README, "Differences from the original nodes".
    """
    if sigma <= 0:
        return None
    return gaussian_taps(sigma, max(1, ceil_snapped(3 * sigma)))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable depthwise Gaussian blur of x [B, C, H, W] (same shape and dtype).

    Padding reflects the image at its border; an axis shorter than the kernel radius + 1 cannot
    be reflected and is replicated instead. sigma <= 0 returns x itself.
    """
    kernel = gaussian_kernel1d(sigma)
    if kernel is None:
        return x
    return separable_blur(x, kernel, kernel)


def degrade(x0: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """blur(x0) where mask is 1, x0 where it is 0. x0: [B, C, H, W]; mask: [B, 1, H, W]."""
    mask = mask.to(x0.dtype)
    return gaussian_blur(x0, sigma) * mask + x0 * (1 - mask)
