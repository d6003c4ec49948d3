"""Which sampling step of the current pass a denoiser call belongs to: monotonic, 0 -> total-1 once.

Both WebUIs (A1111 and Forge/reForge) drive the sampler with `callback=self.callback_state` and
start it with `launch_sampling(steps, lambda: self.func(model_wrap_cfg, x, ..., **schedule))`,
storing the announced step count on the CFG denoiser (`model_wrap_cfg.steps`: p.steps for
txt2img, t_enc + 1 for img2img and the hires pass). The clock wraps both on the sampler
*instance* (a new sampler per pass), so it knows the schedule the sampler was really given.

Two ways to tell the step, chosen by that schedule:

- `sigmas` (every list-schedule k-diffusion sampler, and A1111's Restart): the callback fires
  once per step of that list, so counting callbacks is exact. Restart (`modules/sd_samplers_extra.py`
  `restart_sampler`) walks a main Karras schedule of steps - restart_steps x restart_times steps plus
  the restart segments (restart_steps each): `steps` Heun steps and callbacks in all, whenever it
  restarts (20+ steps, a pass that starts above sigma 0.1). Second-order samplers (the sampler's
  `config.options["second_order"]`: Heun, Restart, DPM2, DPM++ 2S a, DPM++ SDE) call the denoiser
  once, then the callback, then once more for the correction (k_diffusion/sampling.py
  `sample_heun`; Restart's `heun_step`): the first call after a callback still belongs to the step
  that callback closed, so both calls of a step see the same step. (On Forge the clock is read per
  UNet call: a denoiser call split into several UNet calls gives only the first of them the held step.)
- anything else -- integer `timesteps` (DDIM, DDIM CFG++, PLMS, UniPC: they call the model
  len(timesteps) - 1 or len(timesteps) times, not the announced count), `sigma_min`/`sigma_max`
  (DPM fast: about n/3 callbacks; DPM adaptive: as many as its error control takes): the step is
  read from the noise level the denoiser is called at, as the fraction of the pass's noise range
  already covered (log sigma, or the timestep itself, which those samplers space evenly), mapped
  onto the announced steps and never allowed to go back.
"""
from __future__ import annotations

import math
from typing import Optional


class StepClock:
    def __init__(self, sampler, fallback_total: int = 1):
        self.sampler = sampler
        self.fallback_total = max(1, int(fallback_total))
        self.step = 0  # callbacks seen (count mode)
        self._range: Optional[tuple] = None  # (first, last) noise level of the pass (noise mode)
        self._schedule_end = None  # the lowest noise level the schedule calls the model at
        self._log = True  # sigma schedules are measured in log sigma, timesteps linearly
        self._reached = 0
        self._noise_mode = False
        self._hold = False  # a second-order step's correction call is still to come: it keeps that step
        self._wrap_callback(sampler)
        self._wrap_func(sampler)

    # ---- wrappers on the sampler instance ----------------------------------------------------
    def _wrap_callback(self, sampler) -> None:
        original = sampler.callback_state
        # img2img keeps one sampler for every batch of a job: replace an earlier clock, never nest
        original = getattr(original, "sloth_original", original)

        def callback_state(d):
            self.step = int(d.get("i", self.step)) + 1
            self._hold = _second_order(self.sampler)
            return original(d)

        callback_state.sloth_original = original
        sampler.callback_state = callback_state  # instance attribute: gone with the sampler

    def _wrap_func(self, sampler) -> None:
        original = getattr(sampler, "func", None)
        if not callable(original):
            return
        original = getattr(original, "sloth_original", original)

        def func(*args, **kwargs):
            self._learn_schedule(kwargs)
            return original(*args, **kwargs)

        func.sloth_original = original
        func.__wrapped__ = original  # the WebUI picks kwargs by inspect.signature, which follows this
        sampler.func = func

    def _learn_schedule(self, kwargs) -> None:
        """Start of a pass: what schedule was the sampler given?"""
        self.step, self._reached, self._range, self._hold = 0, 0, None, False
        sigmas, timesteps, sigma_min = kwargs.get("sigmas"), kwargs.get("timesteps"), kwargs.get("sigma_min")
        self._noise_mode = sigmas is None and (timesteps is not None or sigma_min is not None)
        if timesteps is not None:
            ts = sorted(float(t) for t in _flat(timesteps))
            # DDIM / PLMS step from timesteps[i] to timesteps[i-1]: the model never sees the smallest
            self._schedule_end, self._log = (ts[1] if len(ts) > 1 else ts[0]), False
        elif sigma_min is not None:
            self._schedule_end, self._log = math.log(max(float(sigma_min), 1e-12)), True

    # ---- reading --------------------------------------------------------------------------
    @property
    def total(self) -> int:
        denoiser = getattr(self.sampler, "model_wrap_cfg", None)
        steps = getattr(denoiser, "steps", None)
        return int(steps) if steps else self.fallback_total

    @property
    def noise_mode(self) -> bool:
        return self._noise_mode

    def now(self, sigma=None):
        """(step, total) of a denoiser call at noise level `sigma` (a tensor of per-row sigmas or
        timesteps, or None), never before an earlier call's step and never past the pass."""
        total = self.total
        if self._noise_mode and sigma is not None:
            step = self._step_from_noise(sigma, total)
        else:
            step = self.step - 1 if self._hold else self.step
        self._hold = False
        self._reached = max(self._reached, min(step, total - 1))
        return self._reached, total

    def _step_from_noise(self, sigma, total: int) -> int:
        level = float(sigma.max()) if hasattr(sigma, "max") else float(sigma)
        if self._log:
            level = math.log(max(level, 1e-12))
        if self._range is None:
            self._range = (level, self._schedule_end)
        first, last = self._range
        if last is None or first <= last:
            return self.step
        covered = min(max((first - level) / (first - last), 0.0), 1.0)
        return int(math.floor(covered * (total - 1) + 0.5))


def _second_order(sampler) -> bool:
    """Whether the WebUI marks this sampler second order (SamplerData options, A1111 and Forge)."""
    options = getattr(getattr(sampler, "config", None), "options", None)
    return bool(options.get("second_order", False)) if isinstance(options, dict) else False


def _flat(values):
    return values.flatten().tolist() if hasattr(values, "flatten") else list(values)
