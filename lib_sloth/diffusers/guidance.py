"""Guidance methods (SAG, ...) around the pipeline's UNet call: the pipeline still does its own CFG.

A diffusers pipeline batches [uncond rows; cond rows] into one UNet call (B rows each) and then
computes ``cfg = uncond + g * (cond - uncond)`` itself (then `guidance_rescale`, then
``scheduler.step``). `GuidanceAroundUNet` wraps that call and drives the pass's guidance objects
(lib_sloth.guidance) as every adapter does: arm the recording ones on the uncond rows, run the
UNet, then hand each its `GuidedStep` (predictions in the model's own kind, eps / v / x0, with the
scheduler's noise level as a NoiseSpace). Each guidance adds its term to what it is handed; the
sum of the terms goes onto the uncond and the cond rows alike. The pipeline's CFG is affine with
weights summing to 1, so its result is exactly ``cfg + term`` for any guidance_scale > 1 (no
division by g).

guidance_rescale (> 0) then rescales ``cfg + term`` towards the std of ``cond + term``: the term
counts as part of both predictions, which differs from WebUIs that add SAG after the rescale.
With guidance_scale <= 1 the pipeline makes no uncond rows and guidance is skipped with a note.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch

from .. import methods
from ..guidance import GuidedStep

KINDS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def prediction_kind(scheduler) -> str:
    """eps / v / x0 from the scheduler's config (what the UNet was trained to predict)."""
    kind = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if kind not in KINDS:
        raise ValueError(f"prediction_type {kind!r}: guidance supports {sorted(KINDS)}")
    return KINDS[kind]


def rows_of(value: Any, rows: slice, batch: int) -> Any:
    """The same UNet argument restricted to `rows` of a `batch`-row call: tensors (and tensors in
    dicts, lists and tuples) whose first dimension is the batch; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: rows_of(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rows_of(v, rows, batch) for v in value)
    return value


class GuidanceAroundUNet:
    """The pass's guidances for one `apply` block: `before(args)` arms, `after(args, out, run_unet)`
    guides. args: the UNet call's bound arguments (name -> value); out [2B, C, H, W] its prediction;
    run_unet(sample, **args) makes an extra UNet call (through the processors, nothing recorded)."""

    def __init__(self, guidances: List, pipe, clock, note: Callable[[str], None]):
        self.guidances, self.pipe, self.clock, self.note = guidances, pipe, clock, note

    def _uncond_rows(self, batch: int) -> int:
        """B, the uncond rows at the front of a CFG call; 0 when this call has no uncond rows."""
        if not getattr(self.pipe, "do_classifier_free_guidance", False) or batch % 2:
            return 0
        return batch // 2

    def before(self, args: Dict[str, Any]) -> None:
        self.disarm()
        if not self.guidances:  # every one left the pass (see processor.install)
            return
        b = self._uncond_rows(args["sample"].shape[0])
        if not b:
            names = " and ".join(methods.method_of(g).short for g in self.guidances)
            self.note(f"{names} skipped: guidance_scale <= 1 runs no uncond prediction to guide")
            return
        for guidance in self.guidances:
            if guidance.records:
                guidance.arm(list(range(b)))

    def after(self, args: Dict[str, Any], out: torch.Tensor, run_unet) -> torch.Tensor:
        """out with the guidances' terms added to every row; out itself when there is none."""
        for guidance in self.guidances:
            guidance.stop_recording()
        batch = out.shape[0]
        b = self._uncond_rows(batch)
        if not b or not self.guidances:
            return out
        rows = {"uncond": slice(0, b), "cond": slice(b, batch)}
        rest = {k: v for k, v in args.items() if k not in ("sample", "return_dict")}

        def call_model(which: str, x_in: torch.Tensor) -> torch.Tensor:
            return run_unet(x_in, **{k: rows_of(v, rows[which], batch) for k, v in rest.items()})

        x, uncond = args["sample"][rows["uncond"]], out[rows["uncond"]]
        step = GuidedStep(x, uncond, out[rows["cond"]], call_model, self.clock.noise_space(args["timestep"], x),
                          prediction_kind(self.clock.scheduler))
        guided = uncond
        for guidance in self.guidances:
            guided = guidance.guide(guided, step)
        if guided is uncond:
            return out
        term = guided - uncond
        return out + torch.cat([term, term])

    def disarm(self) -> None:
        for guidance in self.guidances:
            guidance.disarm()
