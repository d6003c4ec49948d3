"""Which step of the pipeline's run a UNet call belongs to, and the noise level it is made at.

diffusers pipelines run ``for i, t in enumerate(timesteps): unet(...); scheduler.step(...)``
after ``scheduler.set_timesteps`` (img2img then slices the timesteps, and tells schedulers that
have it with ``set_begin_index``). `SchedulerClock` wraps those methods on the scheduler *instance*
(taken off again by `detach`) and counts ``step`` calls since the last ``set_timesteps``: that count
is the loop index i, for every scheduler, including Heun's repeated timesteps.

Sloth's schedule positions are sampler steps, as on the WebUIs: a second-order scheduler
(``scheduler.order == 2``: Heun, KDPM2) makes two loop iterations per step, so
``step = i // order`` and ``total = ceil(iterations / order)``; img2img's total is the steps it
really runs (strength 0.5 of 20 steps: 10).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from ..prediction import NoiseSpace


_ABSENT = object()


class SchedulerClock:
    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.iterations = 0  # scheduler.step calls since set_timesteps: the pipeline's loop index
        self.begin: Optional[int] = None  # index in scheduler.timesteps of the run's first iteration
        self._wrapped: List[Tuple[str, object, object]] = []  # (name, our wrapper, the instance attribute before)
        self._wrap("set_timesteps", self._restarted, after=True)
        self._wrap("step", self._stepped, after=True)

    def _wrap(self, name: str, then, after: bool) -> None:
        original = getattr(self.scheduler, name, None)
        if not callable(original):
            return

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            then()
            return result

        before = self.scheduler.__dict__.get(name, _ABSENT)  # someone's own instance wrapper, if any
        self.scheduler.__dict__[name] = wrapper  # instance attribute: detach puts back what was there
        self._wrapped.append((name, wrapper, before))

    def _restarted(self) -> None:
        self.iterations, self.begin = 0, None

    def _stepped(self) -> None:
        self.iterations += 1

    def detach(self) -> None:
        for name, wrapper, before in reversed(self._wrapped):
            if self.scheduler.__dict__.get(name) is not wrapper:
                continue  # replaced after us: theirs stays (it may chain to ours, which only counts)
            if before is _ABSENT:
                del self.scheduler.__dict__[name]
            else:
                self.scheduler.__dict__[name] = before
        self._wrapped.clear()

    # ---- reading ----------------------------------------------------------------------------
    def index(self, timestep) -> Optional[int]:
        """Index in scheduler.timesteps of the current iteration (the scheduler's step_index);
        None before set_timesteps. `timestep` (the UNet call's) locates the first iteration of a
        run whose scheduler does not say where the pipeline began (DDIM img2img)."""
        timesteps = getattr(self.scheduler, "timesteps", None)
        if timesteps is None or len(timesteps) == 0:
            return None
        if self.begin is None:
            begin = getattr(self.scheduler, "begin_index", None)
            self.begin = int(begin) if begin is not None else _first_index(timesteps, timestep)
        return min(self.begin + self.iterations, len(timesteps) - 1)

    def now(self, timestep) -> Tuple[int, int]:
        """(step, total) of a UNet call at `timestep`: 0-based sampler step and steps of this run."""
        index = self.index(timestep)
        if index is None:
            return 0, 1
        order = max(1, int(getattr(self.scheduler, "order", 1) or 1))
        total = max(1, math.ceil((len(self.scheduler.timesteps) - self.begin) / order))
        return min(self.iterations // order, total - 1), total

    def noise_space(self, timestep, like: torch.Tensor) -> NoiseSpace:
        """How the UNet's input mixes x0 and noise at this call: x_in = a * x0 + b * eps.

        Schedulers with a sigma table (Euler, Heun, LMS, DPM++, UniPC, DEIS) feed the UNet
        x / sqrt(sigma^2 + 1) (scale_model_input) or their own variance-preserving x_t, both
        a = 1 / sqrt(1 + sigma^2), b = sigma * a, with sigma = sigmas[step_index]; timestep
        schedulers (DDIM, DDPM, PNDM) feed x_t = sqrt(acp[t]) x0 + sqrt(1 - acp[t]) eps.
        KDPM2's second-order calls use an interpolated sigma this does not see (approximate there).
        """
        sigmas = getattr(self.scheduler, "sigmas", None)
        index = self.index(timestep)
        if sigmas is not None and index is not None and index < len(sigmas):
            sigma = float(sigmas[index])
            a = 1.0 / math.sqrt(1.0 + sigma * sigma)
            return NoiseSpace(_rows(a, like), _rows(sigma * a, like))
        t = torch.as_tensor(timestep).detach().cpu().reshape(-1)[0].round().long()
        return NoiseSpace.from_alphas_cumprod(self.scheduler.alphas_cumprod, t, like=like)


def _first_index(timesteps: torch.Tensor, timestep) -> int:
    t = float(torch.as_tensor(timestep).detach().cpu().reshape(-1)[0])
    found = (timesteps.detach().cpu().double() - t).abs() < 1e-6
    return int(found.nonzero()[0, 0]) if bool(found.any()) else 0


def _rows(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), value, dtype=torch.float32, device=like.device)
