"""Guidance methods: one more UNet pass per step, combined with the CFG result (SAG is the first).

A guidance method is a method-table entry whose `guidance` is a subclass of `Guidance`. The patch
builds one object per active guidance method for each sampling pass (`SlothPatch.guidances`), and
the adapters drive every one of them the same way, without knowing which it is:

    for each UNet call of the normal pass, when g.records:
        g.arm(uncond_rows)  ...the call...  g.stop_recording()
    where g.batches and g.batched_now(): its rows appended to the normal call, run inside
        g.perturbing(rows), their prediction handed over in GuidedStep.batched
    after the WebUI's own CFG combine (or its post-CFG hook):
        cfg = g.guide(cfg, GuidedStep(x, uncond, cond, call_model, space, prediction, batched))
    on an exception: g.disarm()

While the patch is entered, every self-attention call asks each guidance for a plan first:
`record_plan` during the normal pass (SAG records its map on the middle block), `perturb_plan`
only during that guidance's own extra UNet call (`GuidedStep.call_model`, run by `extra_call`
inside the patch's `extra_pass(g)`), where the other guidances do not record.
Several guidances add their terms: each `guide` adds its own term to the cfg it is handed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Tuple

import torch

from .fields import setting
from .layer_call import LayerCall, Plan
from .prediction import NoiseSpace
from .schedule import in_window

# call_model(which, x_in) -> the model's prediction for x_in [B, C, H, W] with that conditioning
# ("uncond" or "cond"), in the step's prediction kind
CallModel = Callable[[str, torch.Tensor], torch.Tensor]


# ---- the step window every built-in guidance's settings end with ---------------------------------
def window_start():
    """The `start` field of a guidance's settings block: its first guided step, as progress."""
    return setting(0.0, 0.0, 1.0, hint="First guided step, as progress 0-1 (0 = the first step)")


def window_end():
    """The `end` field: its last guided step, as progress (start > end guides no step)."""
    return setting(1.0, 0.0, 1.0, hint="Last guided step, as progress 0-1 (1 = the last step); outside the "
                                       "window the step is plain CFG with no extra pass")


class StepWindow:
    """Mixin of a settings block with `start` / `end` fields (window_start / window_end) and `active`."""

    def guides(self, step: int, total: int) -> bool:
        """Whether this step (0-based, of `total`) is guided: active and inside the window [start, end]."""
        return self.active and in_window(step, total, self.start, self.end)


@dataclass(frozen=True)
class BuiltinTwin:
    """A WebUI's own built-in version of a guidance, known by the info-text key its script writes when on."""

    key: str  # e.g. "pagi_enabled" (Forge main / reForge's sd_forge_perturbed_attention)
    name: str  # for the note: "Forge's built-in PerturbedAttentionGuidance"


@dataclass(frozen=True)
class GuidedStep:
    """What a guidance may use of one CFG step (tensors [B, C, H, W], one row per image)."""

    x: torch.Tensor  # the model input of the images (the sampler's latent, as the model saw it)
    uncond: Optional[torch.Tensor]  # the uncond prediction; None when the step had no real uncond
    cond: Optional[torch.Tensor]  # the cond prediction (one per image); None when not at hand
    call_model: CallModel
    space: Optional[NoiseSpace] = None  # None = sigma space (k-diffusion x0 models)
    prediction: str = "x0"  # "x0", "eps" or "v": what the model returns and cfg is
    # guidance -> the prediction (one per image) of the rows it perturbed inside the normal UNet call
    # (`Guidance.batches`); a guidance missing here makes its own extra call
    batched: Mapping[object, torch.Tensor] = field(default_factory=dict)


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
    # its extra call can ride in the normal UNet call: where `batched_now()`, the front end appends a
    # copy of the `extra_rows` rows to that call, runs it inside `perturbing(those rows)` and hands the
    # copies' prediction over in GuidedStep.batched (PAG, SEG: lib_sloth.perturbed)
    batches = False
    builtin_twins: Tuple[BuiltinTwin, ...] = ()  # the WebUIs' built-in versions of it (`stand_down_for`)

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

    def stand_down_for(self, twin: BuiltinTwin) -> str:
        """`twin` is on in this job: leave it what it does, and say so (the note)."""
        return f"{twin.name} is enabled too: both add their guidance; disable one of them"

    def batched_now(self) -> bool:
        """Whether this step's perturbed rows should ride in the normal UNet call (see `batches`)."""
        return False

    def perturbing(self, rows):
        """A context during which this guidance perturbs `rows` of the normal UNet call (see `batches`)."""
        raise NotImplementedError(f"{type(self).__name__} does not batch its extra call")

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
