"""What a denoiser's output means, and how to turn one kind into another (x0 <-> eps <-> v).

Every Stable Diffusion denoiser sees an input that is an affine mix of the clean latent and
unit noise:

    x = a * x0 + b * eps

- k-diffusion samplers (A1111's CompVisDenoiser / CompVisVDenoiser, Forge, ComfyUI) work in
  sigma space: x = x0 + sigma * eps, so a = 1, b = sigma. Their model wrapper returns x0.
- timestep samplers (A1111's DDIM / PLMS / UniPC) work in the model's own variance-preserving
  space: x_t = sqrt(acp) * x0 + sqrt(1 - acp) * eps with acp = alphas_cumprod[t], so
  a = sqrt(acp), b = sqrt(1 - acp). Their model wrapper returns eps.

v is defined on the variance-preserving view of x (x / s with s = sqrt(a^2 + b^2)), where
alpha = a / s and sigma_vp = b / s:  v = alpha * eps - sigma_vp * x0.  For the timestep space
s = 1 and this is the usual v = sqrt(acp) * eps - sqrt(1 - acp) * x0; for sigma space it is what
k-diffusion's VDenoiser (sigma_data = 1) inverts.

Because every conversion is affine in the prediction for a fixed x, guidance terms computed in
x0 space map to eps/v space by the same linear factor; `NoiseSpace` keeps all of it in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("x0", "eps", "v")


@dataclass(frozen=True)
class NoiseSpace:
    """x = a * x0 + b * eps, per row.

    a, b: tensors broadcastable against the latent [B, C, H, W], usually [B, 1, 1, 1]. b must
    be > 0 (at sigma = 0 or acp = 1 there is no noise, and eps is undefined).
    """

    a: torch.Tensor
    b: torch.Tensor

    # ---- constructors -----------------------------------------------------------------------
    @staticmethod
    def from_sigma(sigma, like: torch.Tensor | None = None) -> "NoiseSpace":
        """k-diffusion: x = x0 + sigma * eps. sigma: scalar or [B] -> a = 1, b = sigma as [B, 1, 1, 1]."""
        b = _rows(sigma, like)
        return NoiseSpace(torch.ones_like(b), b)

    @staticmethod
    def from_alphas_cumprod(alphas_cumprod: torch.Tensor, timestep, like: torch.Tensor | None = None) -> "NoiseSpace":
        """Timestep denoisers: x_t = sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * eps.

        alphas_cumprod: [T]; timestep: int or [B] integer tensor (A1111's timestep samplers pass
        the integer timestep where k-diffusion passes sigma).
        """
        # the schedule terms in float64 on the CPU: MPS has no float64 (and they are a few numbers)
        t = torch.as_tensor(timestep).detach().cpu().long()
        acp = alphas_cumprod.detach().cpu().double()[t]
        return NoiseSpace(_rows(acp.sqrt(), like), _rows((1 - acp).sqrt(), like))

    # ---- conversions (all [B, C, H, W] in, same shape out) -----------------------------------
    @property
    def _s(self) -> torch.Tensor:
        return (self.a ** 2 + self.b ** 2).sqrt()

    def x0_from_eps(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self._cast((x - self.b * eps) / self.a, x)

    def eps_from_x0(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self._cast((x - self.a * x0) / self.b, x)

    def x0_from_v(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = self._s
        return self._cast((self.a / s) * (x / s) - (self.b / s) * v, x)

    def v_from_x0(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        s = self._s
        eps = (x - self.a * x0) / self.b
        return self._cast((self.a / s) * eps - (self.b / s) * x0, x)

    def to_x0(self, kind: str, x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """A model output of `kind` ("x0", "eps" or "v") for input x, as x0."""
        _check(kind)
        if kind == "x0":
            return pred
        return self.x0_from_eps(x, pred) if kind == "eps" else self.x0_from_v(x, pred)

    def from_x0(self, kind: str, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x0 for input x, as a model output of `kind`."""
        _check(kind)
        if kind == "x0":
            return x0
        return self.eps_from_x0(x, x0) if kind == "eps" else self.v_from_x0(x, x0)

    def renoise(self, x: torch.Tensor, x0: torch.Tensor, new_x0: torch.Tensor) -> torch.Tensor:
        """The input that has clean part `new_x0` and the same noise that (x, x0) implies.

        eps = (x - a*x0)/b is kept, so the result is a*new_x0 + b*eps = x + a*(new_x0 - x0).
        In sigma space (a = 1) this is SAG's familiar `degraded + (x - uncond_x0)`; in the
        timestep space the difference must be scaled by sqrt(acp), or the re-noised latent would
        carry the wrong signal level.
        """
        return self._cast(x + self.a * (new_x0 - x0), x)

    @staticmethod
    def _cast(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # a, b are fp32 (fp16 latents are promoted for the arithmetic); results keep the latent's dtype
        return value.to(like.dtype)


def in_x0(kind: str, x: torch.Tensor, space: "NoiseSpace | None", guide, *preds: torch.Tensor) -> torch.Tensor:
    """guide(*preds as x0) -> an x0 result, handed back as `kind`: guidance written once, in x0 space.

    preds: predictions of `kind` for the model input x (cfg, cond, ...). x0 needs no space; eps and
    v need the NoiseSpace of this step (A1111 timestep samplers: NoiseSpace.from_alphas_cumprod).
    """
    _check(kind)
    if kind == "x0":
        return guide(*preds)
    if space is None:
        raise ValueError(f"a {kind}-predicting model needs the NoiseSpace of this step to convert to x0")
    return space.from_x0(kind, x, guide(*(space.to_x0(kind, x, p) for p in preds)))


def _rows(value, like: torch.Tensor | None) -> torch.Tensor:
    """Scalar or [B] -> fp32 [B, 1, 1, 1] (or [1, 1, 1, 1]) on like's device.

    fp32, not fp64: MPS has no float64, and fp32 is exact enough for schedule terms.
    """
    t = torch.as_tensor(value).detach().to(torch.float32)
    if like is not None:
        t = t.to(like.device)
    return t.reshape(-1, 1, 1, 1)


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"prediction kind {kind!r}: expected one of {', '.join(KINDS)}")
