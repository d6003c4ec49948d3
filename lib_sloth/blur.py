"""Separable Gaussian blur on a [B, C, H, W] grid: the one blur SAG (latents) and SEG (queries on a
layer's token grid) share. Each caller picks its own kernel size; the taps and the padding are here.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def gaussian_taps(sigma: float, radius: int) -> torch.Tensor:
    """Normalised 1D Gaussian of std `sigma` sampled at the integer offsets -radius..radius (fp32)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def separable_blur(x: torch.Tensor, kernel_h: Optional[torch.Tensor], kernel_w: Optional[torch.Tensor]
                   ) -> torch.Tensor:
    """x [B, C, H, W] blurred per channel by kernel_h down the rows and kernel_w along them (odd
    lengths; None = that axis is left alone). Same shape and dtype.

    Padding reflects the grid at its border; an axis not longer than the kernel radius cannot be
    reflected and is replicated instead. The sums run in fp32: fp16 conv2d is missing on some CPU
    builds, and the extra precision costs nothing next to the attention.
    """
    if kernel_h is None and kernel_w is None:
        return x
    b, c, H, W = x.shape
    flat = x.float().reshape(b * c, 1, H, W)  # one channel per row: the same kernel for every channel
    if kernel_h is not None and kernel_h.numel() > 1:
        r = kernel_h.numel() // 2
        flat = F.pad(flat, (0, 0, r, r), mode="reflect" if r < H else "replicate")
        flat = F.conv2d(flat, kernel_h.to(x.device).view(1, 1, -1, 1))
    if kernel_w is not None and kernel_w.numel() > 1:
        r = kernel_w.numel() // 2
        flat = F.pad(flat, (r, r, 0, 0), mode="reflect" if r < W else "replicate")
        flat = F.conv2d(flat, kernel_w.to(x.device).view(1, 1, 1, -1))
    return flat.reshape(b, c, H, W).to(x.dtype)
