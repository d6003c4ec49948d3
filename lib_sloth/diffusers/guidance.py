"""SAG around the pipeline's UNet call: the pipeline still does its own CFG.

A diffusers pipeline batches [uncond rows; cond rows] into one UNet call (B rows each) and then
computes ``cfg = uncond + g * (cond - uncond)`` itself (then `guidance_rescale`, then
``scheduler.step``). The guidance here wraps the UNet call: arm the map recording on the uncond
rows, run the UNet, compute SAG's term in the model's prediction space (eps, v or x0, through
lib_sloth.prediction.NoiseSpace and the scheduler's noise level) and add the same term to the
uncond and the cond rows. The pipeline's CFG is affine with weights summing to 1, so its result is
exactly ``cfg + term``, for any guidance_scale > 1 (no division by g).

guidance_rescale (> 0) then rescales ``cfg + term`` towards the std of ``cond + term``: the SAG
term counts as part of both predictions, which differs from WebUIs that add SAG after the
rescale. With guidance_scale <= 1 the pipeline makes no uncond rows and SAG is skipped with a note.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..sag import SagPass

KINDS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def prediction_kind(scheduler) -> str:
    """eps / v / x0 from the scheduler's config (what the UNet was trained to predict)."""
    kind = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if kind not in KINDS:
        raise ValueError(f"prediction_type {kind!r}: SAG supports {sorted(KINDS)}")
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


class SagAroundUNet:
    """SAG for one `apply` block: `before(args)` arms, `after(args, out, run_unet)` guides.

    args: the UNet call's bound arguments (name -> value); out [2B, C, H, W]: its prediction.
    """

    def __init__(self, sag: SagPass, pipe, clock, note):
        self.sag, self.pipe, self.clock, self.note = sag, pipe, clock, note

    @property
    def extra_calls(self) -> int:
        return self.sag.extra_calls

    def disarm(self) -> None:
        self.sag.disarm()

    def _cfg_rows(self, batch: int) -> int:
        """B, the uncond rows at the front of a CFG call; 0 when this call has no uncond rows."""
        if not getattr(self.pipe, "do_classifier_free_guidance", False) or batch % 2:
            return 0
        return batch // 2

    def before(self, args: Dict[str, Any]) -> None:
        self.sag.disarm()
        b = self._cfg_rows(args["sample"].shape[0])
        if b:
            self.sag.arm(list(range(b)))
        else:
            self.note("SAG skipped: guidance_scale <= 1 runs no uncond prediction for SAG to guide")

    def after(self, args: Dict[str, Any], out: torch.Tensor, run_unet) -> torch.Tensor:
        """out with SAG's term added to every row; out itself when nothing was recorded."""
        self.sag.stop_recording()
        b = self._cfg_rows(out.shape[0])
        if not b or self.sag.recorded is None:
            self.sag.disarm()
            return out
        batch, uncond_rows = out.shape[0], slice(0, b)
        x, timestep = args["sample"][uncond_rows], args["timestep"]
        rest = {k: rows_of(v, uncond_rows, batch) for k, v in args.items() if k not in ("sample", "return_dict")}

        def call_model(x_in: torch.Tensor) -> torch.Tensor:
            return run_unet(x_in, **rest)

        uncond = out[uncond_rows]
        guided = self.sag.guide(uncond, x, uncond, call_model, space=self.clock.noise_space(timestep, x),
                                prediction=prediction_kind(self.clock.scheduler))
        term = guided - uncond
        return out + torch.cat([term, term])
