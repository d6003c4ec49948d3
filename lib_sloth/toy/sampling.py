"""Sampling the toy model: SD's schedule, k-diffusion's Euler with classifier-free guidance,
the Sloth patch's step clock and its guidance methods (SAG, PAG, SEG), the same way a WebUI
front end drives them (lib_sloth.guidance)."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from ..bench_cases import sdp_attention
from ..guidance import GuidedStep
from ..patch import SlothPatch
from ..prediction import NoiseSpace
from ..settings import SlothSettings


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD's "scaled linear" schedule: betas linear in sqrt space. [steps] float64."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def euler_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` sigmas at timesteps evenly spaced from the last to the first, then 0. [steps + 1] fp64.

    sigma = sqrt((1 - acp) / acp) at each timestep: what A1111's default discrete schedule gives."""
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    t = torch.linspace(len(alphas_cumprod) - 1, 0, steps, dtype=torch.float64).round().long()
    return torch.cat([sigmas[t], sigmas.new_zeros(1)])


class EpsToX0:
    """The eps-UNet as a k-diffusion x0 denoiser (k-diffusion's CompVisDenoiser).

    The sampler's x = x0 + sigma * eps; the UNet sees x_t = x / sqrt(sigma^2 + 1) and the nearest
    discrete timestep (the sigmas of `euler_sigmas` sit exactly on timesteps), returns eps, so
    x0 = x - sigma * eps.
    """

    kind = "x0"

    def __init__(self, unet, alphas_cumprod: torch.Tensor):
        self.unet = unet
        self.log_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self.log_sigmas[None, :] - sigma.double().log()[:, None]).abs().argmin(dim=1)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        eps = self.unet(x / (s ** 2 + 1).sqrt(), self.timestep(sigma), context)
        return x - s * eps

    @staticmethod
    def space(sigma: torch.Tensor, x: torch.Tensor) -> NoiseSpace:
        return NoiseSpace.from_sigma(sigma, like=x)


def cfg_step(model: EpsToX0, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
             cfg_scale: float, patch: SlothPatch) -> torch.Tensor:
    """One guided x0 prediction, laid out as A1111 does: one call on [cond rows; uncond rows],
    uncond + scale * (cond - uncond), then each guidance of the patch (the recording ones armed on
    the uncond rows), each with its own extra call."""
    b = x.shape[0]
    sigma_in = sigma.expand(2 * b)
    recording = [g for g in patch.guidances if g.records]
    for guidance in recording:
        guidance.arm(slice(b, 2 * b))
    try:
        out = model(torch.cat([x, x]), sigma_in, torch.cat([cond, uncond]))
    finally:
        for guidance in recording:
            guidance.stop_recording()
    cond_x0, uncond_x0 = out[:b], out[b:]
    guided = uncond_x0 + cfg_scale * (cond_x0 - uncond_x0)
    sigma_b = sigma.expand(b)
    contexts = {"cond": cond, "uncond": uncond}
    step = GuidedStep(x, uncond_x0, cond_x0, lambda which, x_in: model(x_in, sigma_b, contexts[which]),
                      model.space(sigma_b, x), model.kind)
    for guidance in patch.guidances:
        guided = guidance.guide(guided, step)
    return guided


def sample(unet, cond: torch.Tensor, uncond: torch.Tensor, noise: torch.Tensor, *, steps: int,
           cfg_scale: float, settings: Optional[SlothSettings] = None, seed: int = 0, recorder=None) -> torch.Tensor:
    """Euler + CFG (+ guidance) under a SlothPatch; returns x0 [B, C, H, W] (pixels in about [-1, 1]).

    cond, uncond: [B, T, D] contexts; noise: [B, C, H, W] unit Gaussian (scaled to the first
    sigma here). The patch's step clock gets (step, steps) before each step, as the WebUI's
    sampler callback does. `recorder`: a maps.MapRecorder for "Show Sloth maps".
    Plain attention calls run SDPA, like the WebUI's default optimisation.
    """
    settings = settings if settings is not None else SlothSettings()
    acp = sd_alphas_cumprod()
    model = EpsToX0(unet, acp)
    sigmas = euler_sigmas(acp, steps).float()
    patch = SlothPatch(unet, settings, seed=seed, recorder=recorder)
    x = noise * sigmas[0]
    with torch.no_grad(), sdp_attention(), patch:
        for i in range(steps):
            patch.set_step(i, steps)
            # pixels live in [-1, 1]: clip the guided x0 (DDPM's clip_denoised for pixel models), so an
            # early step's over-shooting colour does not carry into the following steps
            denoised = cfg_step(model, x, sigmas[i:i + 1], cond, uncond, cfg_scale, patch).clamp(-1, 1)
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def noise_for(seeds: Sequence[int], shape=(3, 32, 32)) -> torch.Tensor:
    """[B, *shape] unit Gaussian, image i from its own generator seeded seeds[i]: an image's noise
    does not depend on the batch it is sampled in."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def generate(unet, text, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, cfg_scale: float,
             settings: Optional[SlothSettings] = None, chunk: int = 50, recorder=None):
    """Sample one image per (prompt, seed), `chunk` images per sampler run (the patch's seed is
    the chunk's first image seed, as the WebUI seeds a batch). Returns (images [B, 3, 32, 32]
    clamped to [-1, 1], seconds per image)."""
    out, start = [], time.perf_counter()
    uncond_one = text.encode([""])
    with torch.no_grad():
        for i in range(0, len(prompts), chunk):
            cond = text.encode(list(prompts[i:i + chunk]))
            uncond = uncond_one.expand(len(cond), -1, -1)
            rec = recorder if i == 0 else None
            out.append(sample(unet, cond, uncond, noise_for(seeds[i:i + chunk]), steps=steps, cfg_scale=cfg_scale,
                              settings=settings, seed=int(seeds[i]), recorder=rec))
    seconds = (time.perf_counter() - start) / max(1, len(prompts))
    return torch.cat(out).clamp(-1, 1), seconds


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[..., H, W] in [-1, 1] -> uint8 in [0, 255]: the pixels a saved PNG holds (the demo's
    grid, the quality table's cached images)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
