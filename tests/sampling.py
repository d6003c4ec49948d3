"""A small sampler harness shaped like the WebUI's, for end-to-end tests on the tiny ldm UNets.

- Denoisers: `KDiffusionX0` (k-diffusion style: input x = x0 + sigma*eps, returns x0) and
  `TimestepEps` (A1111's timestep samplers: input x_t, integer timestep, returns eps).
- `CFGDenoiser`: builds the batch like A1111's CFGDenoiser (each image's cond rows, cond rows
  first, uncond rows last — or first, Forge-style), runs ONE model call, combines like
  `combine_denoised`, then hands the step to SAG the way a front end would.
- `sample_euler` (sigmas) and `sample_ddim` (eta 0, timesteps).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from lib_sloth.guidance import GuidedStep
from lib_sloth.prediction import NoiseSpace


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD's "scaled linear" schedule: betas linear in sqrt space. [steps] float64."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


class KDiffusionX0:
    """eps-model -> x0 denoiser in sigma space (what k-diffusion's CompVisDenoiser does).

    Input x = x0 + sigma*eps; the UNet wants the variance-preserving x_t = x / sqrt(sigma^2 + 1)
    (c_in) and returns eps, so x0 = x - sigma*eps (c_skip = 1, c_out = -sigma).
    """

    kind = "x0"

    def __init__(self, unet, alphas_cumprod: torch.Tensor):
        self.unet = unet
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # [T], rising with t
        self.calls = 0

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest discrete timestep of each sigma (log distance)."""
        return (self.sigmas.log()[None, :] - sigma.double().log()[:, None]).abs().argmin(dim=1)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        eps = self.unet(x / (s ** 2 + 1).sqrt(), self.timestep(sigma), context)
        return x - s * eps

    def space(self, sigma: torch.Tensor, x: torch.Tensor) -> NoiseSpace:
        return NoiseSpace.from_sigma(sigma, like=x)


class TimestepEps:
    """A1111's CompVisTimestepsDenoiser: x_t and an integer timestep in, eps out."""

    kind = "eps"

    def __init__(self, unet, alphas_cumprod: torch.Tensor):
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.unet(x, t, context)

    def space(self, t: torch.Tensor, x: torch.Tensor) -> NoiseSpace:
        return NoiseSpace.from_alphas_cumprod(self.alphas_cumprod, t, like=x)


class TimestepV(TimestepEps):
    """A v-predicting timestep denoiser, made from the eps UNet: v = sqrt(acp)*eps - sqrt(1-acp)*x0."""

    kind = "v"

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        space = self.space(t, x)
        return space.from_x0("v", x, space.x0_from_eps(x, super().__call__(x, t, context)))


def combine_denoised(out: torch.Tensor, conds_list: List[List[Tuple[int, float]]], uncond: torch.Tensor,
                     cond_scale: float) -> torch.Tensor:
    """The WebUI's combine: each image's uncond plus its weighted (cond - uncond) terms."""
    result = uncond.clone()
    for i, conds in enumerate(conds_list):
        for index, weight in conds:
            result[i] += (out[index] - uncond[i]) * (weight * cond_scale)
    return result


class CFGDenoiser:
    """One CFG step over a batch of images, with optional SAG.

    conds: [R, T, D] cond rows (R = sum of subprompts per image); conds_list[i] = [(row in
    conds, weight), ...] for image i; uncond: [B, T, D]. `uncond_first` lays the batch out
    Forge-style (uncond rows first) instead of A1111's (uncond rows last).
    """

    def __init__(self, model, conds: torch.Tensor, conds_list, uncond: torch.Tensor, cond_scale: float,
                 sag=None, uncond_first: bool = False, uncond_is_real: bool = True):
        self.model, self.conds, self.conds_list, self.uncond = model, conds, conds_list, uncond
        self.cond_scale, self.sag, self.uncond_first = cond_scale, sag, uncond_first
        self.uncond_is_real = uncond_is_real

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        image_of_row = [i for i, conds in enumerate(self.conds_list) for _ in conds]
        x_cond, s_cond = x[image_of_row], sigma[image_of_row]
        r = len(image_of_row)
        if self.uncond_first:
            x_in, s_in, c_in = torch.cat([x, x_cond]), torch.cat([sigma, s_cond]), torch.cat([self.uncond, self.conds])
            uncond_rows, cond_offset = slice(0, b), b
        else:
            x_in, s_in, c_in = torch.cat([x_cond, x]), torch.cat([s_cond, sigma]), torch.cat([self.conds, self.uncond])
            uncond_rows, cond_offset = slice(r, r + b), 0
        if self.sag is not None and self.uncond_is_real:
            self.sag.arm(uncond_rows)  # a front end knows before the call whether uncond is real
        out = self.model(x_in, s_in, c_in)
        uncond_out = out[uncond_rows]
        conds_list = [[(cond_offset + i, w) for i, w in conds] for conds in self.conds_list]
        cfg = combine_denoised(out, conds_list, uncond_out, self.cond_scale)
        if self.sag is None:
            return cfg
        step = GuidedStep(x, uncond_out if self.uncond_is_real else None, None,
                          lambda which, x_deg: self.model(x_deg, sigma, self.uncond),
                          self.model.space(sigma, x), self.model.kind)
        return self.sag.guide(cfg, step)


def sigmas_for(model: KDiffusionX0, steps: int) -> torch.Tensor:
    """`steps` sigmas evenly spaced in timestep from the top, then 0. [steps + 1] fp32."""
    t = torch.linspace(len(model.sigmas) - 1, 0, steps).round().long()
    return torch.cat([model.sigmas[t], torch.zeros(1, dtype=model.sigmas.dtype)]).float()


def sample_euler(denoise, x: torch.Tensor, sigmas: torch.Tensor, patch=None) -> torch.Tensor:
    """k-diffusion's Euler: x moves along d = (x - x0) / sigma."""
    n = len(sigmas) - 1
    for i in range(n):
        if patch is not None:
            patch.set_step(i, n)
        sigma = sigmas[i].expand(x.shape[0])
        denoised = denoise(x, sigma)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def ddim_timesteps(steps: int, total: int = 1000) -> torch.Tensor:
    return torch.linspace(total - 1, 0, steps).round().long()


def sample_ddim(denoise, x: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                patch=None) -> torch.Tensor:
    """Deterministic DDIM on an eps denoiser: x0 from eps, then re-noise to the next timestep."""
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        if patch is not None:
            patch.set_step(i, n)
        eps = denoise(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        a = alphas_cumprod[int(t)].float()
        a_next = alphas_cumprod[int(timesteps[i + 1])].float() if i + 1 < n else torch.tensor(1.0)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def prompts(unet_context_dim: int, conds_per_image: Sequence[int], tokens: int = 77, seed: int = 3):
    """Random cond rows, conds_list (AND-prompt weights 1/n) and uncond rows, like the WebUI builds."""
    g = torch.Generator().manual_seed(seed)
    total = sum(conds_per_image)
    conds = torch.randn(total, tokens, unet_context_dim, generator=g)
    uncond = torch.randn(len(conds_per_image), tokens, unet_context_dim, generator=g)
    conds_list, row = [], 0
    for n in conds_per_image:
        conds_list.append([(row + j, 1.0 / n) for j in range(n)])
        row += n
    return conds, conds_list, uncond


def noise(batch: int, h: int, w: int, seed: int = 5, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, h, w, generator=g) * scale


def run(unet, settings=None, *, sag_settings=None, batch: int = 1, conds_per_image: Optional[Sequence[int]] = None,
        hw=(40, 48), steps: int = 4, cond_scale: float = 5.0, sampler: str = "euler", uncond_first: bool = False,
        context_dim: int = 768, on_pass=None):
    """Sample end to end; returns (latent, denoiser, sag_pass, patch). sag_settings None = no SAG object."""
    from lib_sloth.patch import SlothPatch
    from lib_sloth.sag import SagPass
    from lib_sloth.settings import SlothSettings

    acp = sd_alphas_cumprod()
    settings = settings or SlothSettings()
    conds, conds_list, uncond = prompts(context_dim, conds_per_image or [1] * batch)
    patch = SlothPatch(unet, settings, seed=1)
    sag = (patch.guidance("sag") or SagPass(sag_settings, patch)) if sag_settings is not None else None
    if on_pass is not None:
        on_pass(patch, sag)
    with torch.no_grad(), patch:
        if sampler == "euler":
            model = KDiffusionX0(unet, acp)
            sigmas = sigmas_for(model, steps)
            den = CFGDenoiser(model, conds, conds_list, uncond, cond_scale, sag, uncond_first)
            x = sample_euler(den, noise(batch, *hw) * sigmas[0], sigmas, patch)
        else:
            model = TimestepEps(unet, acp)
            den = CFGDenoiser(model, conds, conds_list, uncond, cond_scale, sag, uncond_first)
            x = sample_ddim(den, noise(batch, *hw), ddim_timesteps(steps), acp, patch)
    return x, model, sag, patch
