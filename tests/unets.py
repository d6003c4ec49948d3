"""Tiny real ldm UNets with random weights, for tests and examples.

The stock ldm UNetModel zero-initialises proj_out of every SpatialTransformer and the final
conv, so a fresh UNet returns zeros and attention changes never reach the output: every layer
is re-initialised here from a seed.
"""
from __future__ import annotations

import torch
from ldm.modules.diffusionmodules.openaimodel import UNetModel


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()
    return module.eval()


def sd15_unet(seed: int = 0, model_channels: int = 32, context_dim: int = 768) -> UNetModel:
    """SD1.5 layout: attention at downsample 1, 2, 4 and in the middle block (8 heads)."""
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=model_channels,
                     num_res_blocks=1, attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4],
                     num_heads=8, use_spatial_transformer=True, transformer_depth=1,
                     context_dim=context_dim, legacy=False)
    return randomise(unet, seed)


def sdxl_like_unet(seed: int = 0, model_channels: int = 64, context_dim: int = 2048) -> UNetModel:
    """SDXL layout traits: no attention at full resolution, 64-channel heads, linear projections."""
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=model_channels,
                     num_res_blocks=2, attention_resolutions=[4, 2], channel_mult=[1, 2, 4],
                     num_head_channels=64, use_spatial_transformer=True, transformer_depth=1,
                     context_dim=context_dim, use_linear_in_transformer=True, legacy=False)
    return randomise(unet, seed)


def unet_inputs(unet: UNetModel, batch: int, h: int, w: int, seed: int = 1, tokens: int = 77):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, h, w, generator=g)
    t = torch.full((batch,), 500, dtype=torch.long)
    context = torch.randn(batch, tokens, _context_dim(unet), generator=g)
    return x, t, context


def _context_dim(unet: UNetModel) -> int:
    for m in unet.modules():
        if hasattr(m, "attn2"):
            return m.attn2.to_k.in_features
    raise ValueError("UNet has no cross-attention")
