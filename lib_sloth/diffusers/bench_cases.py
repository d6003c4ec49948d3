"""The benchmark's cases on the diffusers UNet (``python -m lib_sloth.bench --substrate diffusers``).

The same table as on the ldm UNet: SD1.5's architecture as a diffusers `UNet2DConditionModel`
(block_out_channels 320/640/1280/1280, 8 heads, random weights), its default AttnProcessor2_0
(SDPA) for every call a method leaves alone, each method entered through `apply` at the same
step, tomesd through its own diffusers path, and the ceiling with every attn1 processor returning
zeros. Each guidance method's CFG step enters `apply` on a pipeline stand-in (CFG rows, an eps
scheduler).
"""
from __future__ import annotations

import contextlib
import types
from typing import List

import torch

from .. import bench_cases as ldm_cases
from ..bench_cases import Case, sd15_alphas_cumprod
from ..settings import settings_from_dict
from .layers import find_self_attention
from .run import apply


def build_unet(device, dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                                attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return unet.to(device=device, dtype=dtype).eval()


class _Free:
    """An attention processor that computes nothing: zeros shaped like the input."""

    def __call__(self, attn, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states)


@contextlib.contextmanager
def free_self_attention(unet):
    """Every attn1 returns zeros (its processor replaced); put back on exit, whatever happens."""
    layers = list(find_self_attention(unet))
    saved = [m.processor for m in layers]
    try:
        for m in layers:
            m.set_processor(_Free())
        yield
    finally:
        for m, p in zip(layers, saved):
            m.set_processor(p)


def tomesd_case(ratio: float) -> Case:
    @contextlib.contextmanager
    def enter(unet):
        import tomesd

        tomesd.apply_patch(unet, ratio=ratio)  # tomesd's own diffusers path (a ModelMixin)
        try:
            yield
        finally:
            tomesd.remove_patch(unet)

    return Case(f"tomesd {ratio}", enter)


def default_cases() -> List[Case]:
    return ldm_cases.default_cases(patch=apply, tomesd=tomesd_case, free=free_self_attention)


def _cfg_call(unet, x, t, ctx, handle):
    unet(x, t, ctx)  # rows [uncond, cond]; inside `apply` the hooks add each guidance's term


def guided_case(name: str, data: dict) -> Case:
    """One CFG UNet call inside `apply` on a pipeline stand-in (CFG rows, an eps scheduler)."""
    settings = settings_from_dict(data)
    scheduler = types.SimpleNamespace(timesteps=torch.tensor([500]), alphas_cumprod=sd15_alphas_cumprod(),
                                      config=types.SimpleNamespace(prediction_type="epsilon"), order=1)

    @contextlib.contextmanager
    def enter(unet):
        pipe = types.SimpleNamespace(unet=unet, scheduler=scheduler, do_classifier_free_guidance=True)
        with apply(pipe, settings, seed=1) as run:
            yield run

    return Case(name, enter, _cfg_call)


def sag_cases() -> List[Case]:
    """A plain CFG UNet call, each guidance method's rows, the plain call again."""
    return ldm_cases.sag_cases(guided_case, _cfg_call)
