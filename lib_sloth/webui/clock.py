"""Which sampling step of the current pass a denoiser call belongs to.

Both WebUIs (A1111 and Forge/reForge) drive the sampler with `callback=self.callback_state`,
called once at the end of every sampler step with d["i"], and `launch_sampling(steps, ...)`
stores the pass's step count on the CFG denoiser (`model_wrap_cfg.steps`: p.steps for txt2img,
t_enc + 1 for img2img and the hires pass). Wrapping `callback_state` on the sampler *instance*
(a new sampler per pass) counts real steps: second-order samplers call the denoiser twice per
step but the callback once, so both calls see the same step.
"""
from __future__ import annotations


class StepClock:
    def __init__(self, sampler, fallback_total: int = 1):
        self.sampler = sampler
        self.fallback_total = max(1, int(fallback_total))
        self.step = 0
        original = sampler.callback_state
        # img2img keeps one sampler for every batch of a job: replace an earlier clock, never nest
        original = getattr(original, "sloth_original", original)

        def callback_state(d):
            self.step = int(d.get("i", self.step)) + 1
            return original(d)

        callback_state.sloth_original = original
        sampler.callback_state = callback_state  # instance attribute: gone with the sampler

    @property
    def total(self) -> int:
        denoiser = getattr(self.sampler, "model_wrap_cfg", None)
        steps = getattr(denoiser, "steps", None)
        return int(steps) if steps else self.fallback_total

    def now(self):
        """(step, total) with step clipped into the pass."""
        total = self.total
        return min(self.step, total - 1), total
