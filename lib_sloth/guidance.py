"""Guidance methods: one more UNet pass per step, combined with the CFG result (SAG is the first).

A guidance method is a method-table entry whose `guidance` is a subclass of `Guidance`. The patch
builds one object per active guidance method for each sampling pass (`SlothPatch.guidances`), and
the adapters drive every one of them the same way, without knowing which it is:

    for each UNet call of the normal pass, when g.records:
        g.arm(uncond_rows)  ...the call...  g.stop_recording()
    after the WebUI's own CFG combine (or its post-CFG hook):
        cfg = g.guide(cfg, GuidedStep(x, uncond, cond, call_model, space, prediction))
    on an exception: g.disarm()

While the patch is entered, every self-attention call asks each guidance for a plan first:
`record_plan` during the normal pass (SAG records its map on the middle block), `perturb_plan`
only during that guidance's own extra UNet call (`GuidedStep.call_model`, run by `extra_call`
inside the patch's `extra_pass(g)`), where the other guidances do not record.
Several guidances add their terms: each `guide` adds its own term to the cfg it is handed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from .layer_call import LayerCall, Plan
from .prediction import NoiseSpace

# call_model(which, x_in) -> the model's prediction for x_in [B, C, H, W] with that conditioning
# ("uncond" or "cond"), in the step's prediction kind
CallModel = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GuidedStep:
    """What a guidance may use of one CFG step (tensors [B, C, H, W], one row per image)."""

    x: torch.Tensor  # the model input of the images (the sampler's latent, as the model saw it)
    uncond: Optional[torch.Tensor]  # the uncond prediction; None when the step had no real uncond
    cond: Optional[torch.Tensor]  # the cond prediction (one per image); None when not at hand
    call_model: CallModel
    space: Optional[NoiseSpace] = None  # None = sigma space (k-diffusion x0 models)
    prediction: str = "x0"  # "x0", "eps" or "v": what the model returns and cfg is


class Guidance:
    """One guidance method's state for one sampling pass. Subclasses set `records` / `extra_rows`
    and override `guide` and, as needed, `record_plan`, `perturb_plan` and the recording calls.

    `host` is the pass's SlothPatch (step, total, notes, recorder, extra_pass); None for a
    front end that drives the guidance math alone. Created active, it joins `host.guidances`.
    """

    records = False  # needs arm()/stop_recording() around the uncond rows of the normal pass
    extra_rows = "uncond"  # whose conditioning its extra UNet call uses
    # (block, index) of the self-attention layers it must see run normally (SAG reads the middle
    # block's first map): where another extension replaces one, the guidance is skipped
    needs_layers: Tuple[Tuple[str, int], ...] = ()

    def __init__(self, settings, host=None):
        self.settings = settings
        self.host = host
        self.extra_calls = 0  # extra UNet calls made, for info and tests
        self.notes: List[str] = []
        if host is not None and self.active:
            host.guidances.append(self)

    @property
    def active(self) -> bool:
        return self.settings.active

    def note(self, message: str) -> None:
        target = self.host.notes if self.host is not None else self.notes
        if message not in target:
            target.append(message)

    def close(self) -> None:
        """Leave the host and drop any state."""
        self.disarm()
        if self.host is not None and self in self.host.guidances:
            self.host.guidances.remove(self)

    # ---- the normal pass --------------------------------------------------------------------
    def arm(self, rows) -> None:
        """Record during the next UNet call(s); `rows` index the uncond rows of that call."""

    def stop_recording(self) -> None:
        """Record no further call; keep what was recorded for the coming `guide`."""

    def disarm(self) -> None:
        """Drop everything recorded this step."""

    def record_plan(self, module, info, x: torch.Tensor, call: LayerCall) -> Optional[Plan]:
        """A plan for this self-attention call of the normal pass, or None (sees calls whose grid is unknown)."""
        return None

    # ---- the extra pass ---------------------------------------------------------------------
    def perturb_plan(self, module, info, x: torch.Tensor, call: LayerCall) -> Optional[Plan]:
        """A plan for this self-attention call of this guidance's own extra UNet call, or None."""
        return None

    def extra_call(self, step: GuidedStep, x_in: torch.Tensor) -> torch.Tensor:
        """The extra UNet call on x_in with `extra_rows`' conditioning, this guidance perturbing it."""
        self.extra_calls += 1
        if self.host is None:
            return step.call_model(self.extra_rows, x_in)
        with self.host.extra_pass(self):
            return step.call_model(self.extra_rows, x_in)

    def guide(self, cfg: torch.Tensor, step: GuidedStep) -> torch.Tensor:
        """cfg plus this guidance's term, or cfg itself (no extra call) when the step cannot use it."""
        raise NotImplementedError
