"""Self-Attention Guidance (Hong et al., ICCV 2023), backend-independent.

A front end does three things per CFG step, all on one `SagPass` created before the
SlothPatch is entered (its interceptor must be there when the patch installs):

    sag = SagPass(settings.sag, patch)               # once per sampling pass
    with patch:
        ...                                          # per denoiser call:
        sag.arm(uncond_rows)                         # before the UNet call(s) holding the uncond rows
        out = model(x_in, sigma_in, cond_in)         # the middle block's first attn1 records its map
        cfg = combine(out)                           # the WebUI's own CFG combine
        cfg = sag.guide(cfg, x, out[uncond_rows], call_model, space=..., prediction=...)

`guide` drops the map whatever happens and returns cfg + scale * (degraded - sag_pred), where
degraded is the uncond prediction blurred where the uncond attends most and sag_pred the model's
prediction for it (one more model call, uncond conditioning). The math is in x0 space
(`sag_guidance`); `sag_guidance_pred` converts eps / v through lib_sloth.prediction.NoiseSpace.
Steps without a real uncond, or without a recorded map, return cfg itself with no model call.
Why this form, the re-noising and the memory bound: docs/design.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Tuple

import torch

from .fields import Validated, setting
from .prediction import NoiseSpace, in_x0
from .schedule import in_window
from .sag_capture import RECORDED_BLOCK, RECORDED_INDEX, Rows, SagMap, attention_with_map, resolve_rows
from .sag_mask import attention_mask, degrade


@dataclass(frozen=True)
class SagSettings(Validated):
    enabled: bool = setting(False, hint="Self-Attention Guidance: one more UNet pass per step (+~50 % time)")
    scale: float = setting(0.5, -2.0, 5.0, hint="Guidance strength; 0 = off; the effect saturates around 1.5")
    blur_sigma: float = setting(2.0, 0.0, 10.0, hint="Blur of the attended regions in latent cells; 0 = no blur")
    threshold: float = setting(1.0, 0.0, 4.0,
                               hint="Tokens receiving more attention than this are blurred; lower = larger blurred area")
    # appended after threshold: the positional API args of earlier fields never move
    start: float = setting(0.0, 0.0, 1.0, hint="First guided step, as progress 0-1 (0 = the first step)")
    end: float = setting(1.0, 0.0, 1.0, hint="Last guided step, as progress 0-1 (1 = the last step); outside the "
                                            "window the step is plain CFG with no extra pass")

    @property
    def active(self) -> bool:
        """Whether guidance changes anything (a scale of 0 or an empty window adds nothing and costs no
        extra call)."""
        return self.enabled and self.scale != 0 and self.start <= self.end

    def guides(self, step: int, total: int) -> bool:
        """Whether this step (0-based, of `total`) is guided: active and inside the window."""
        return self.active and in_window(step, total, self.start, self.end)

# call_model(x_in [B, C, H, W]) -> the model's prediction for those rows, with the uncond conditioning
CallModel = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Guidance (pure)
# ---------------------------------------------------------------------------------------------
def sag_guidance(cfg_x0: torch.Tensor, x: torch.Tensor, uncond_x0: torch.Tensor, attn_map: torch.Tensor,
                 heads: int, settings: SagSettings, call_model: CallModel, *, space: Optional[NoiseSpace] = None,
                 grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """cfg_x0 + scale * (degraded - sag_x0), everything x0 and [B, C, H, W].

    x: the model input of the uncond rows (the sampler's latent). attn_map: [B*heads, N, N]
    from the uncond rows. call_model(x_in) must return x0 for the uncond conditioning.
    space: how x mixes x0 and noise; None = sigma space (x = x0 + sigma*eps), where the re-noise
    needs no sigma. Settings with scale 0 or enabled off return cfg_x0 itself, with no model call.
    """
    if not settings.active:
        return cfg_x0
    b = uncond_x0.shape[0]
    if attn_map.shape[0] != b * heads:
        raise ValueError(f"attention map has {attn_map.shape[0]} rows; {b} uncond images x {heads} heads "
                         f"= {b * heads} expected")
    mask = attention_mask(attn_map, heads, tuple(uncond_x0.shape[-2:]), settings.threshold, grid)
    degraded = degrade(uncond_x0, mask, settings.blur_sigma)
    if space is None:
        space = NoiseSpace.from_sigma(1.0, like=x)  # only `a` (= 1 in sigma space) is used by renoise
    # keep the uncond's implied noise: in the model's own input space, not blindly x0 + (x - x0)
    sag_x0 = call_model(space.renoise(x, uncond_x0, degraded))
    return cfg_x0 + settings.scale * (degraded - sag_x0)


def sag_guidance_pred(kind: str, cfg: torch.Tensor, x: torch.Tensor, uncond: torch.Tensor, attn_map: torch.Tensor,
                      heads: int, settings: SagSettings, call_model: CallModel, *, space: Optional[NoiseSpace],
                      grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """sag_guidance for a model whose outputs are `kind` ("x0", "eps" or "v"); same kind out.

    cfg and uncond are predictions for input x; call_model returns the same kind. space is
    required for eps and v (A1111 timestep samplers: NoiseSpace.from_alphas_cumprod(acp, t)).
    """
    if not settings.active:
        return cfg
    if kind == "x0":
        call_x0 = call_model
    else:
        def call_x0(x_in: torch.Tensor) -> torch.Tensor:
            return space.to_x0(kind, x_in, call_model(x_in))  # converted at its own input, not at x

    def guide(cfg_x0: torch.Tensor, uncond_x0: torch.Tensor) -> torch.Tensor:
        return sag_guidance(cfg_x0, x, uncond_x0, attn_map, heads, settings, call_x0, space=space, grid=grid)

    return in_x0(kind, x, space, guide, cfg, uncond)


# ---------------------------------------------------------------------------------------------
# Per-pass state
# ---------------------------------------------------------------------------------------------
class SagPass:
    """SAG state for one sampling pass: the armed rows and at most one recorded map.

    Created with a SlothPatch, it adds its interceptor to patch.interceptors (create it before
    entering the patch). Inactive settings (off or scale 0) add nothing, so the pass is
    bit-identical to one without SAG. `patch` may be None for a front end that records the map
    itself (e.g. through ComfyUI/Forge attention replacement) and only calls sag_guidance.
    """

    def __init__(self, settings: SagSettings, patch=None, upcast: Optional[bool] = None):
        self.settings = settings
        self.patch = patch
        self.upcast = bool(getattr(getattr(patch, "settings", None), "upcast_attention", False)
                           if upcast is None else upcast)
        self.extra_calls = 0  # SAG model calls made, for info and tests
        self.notes: List[str] = []
        self._rows: Optional[Rows] = None
        self._map: Optional[SagMap] = None
        if patch is not None and self.active:
            patch.interceptors.append(self.intercept)

    @property
    def active(self) -> bool:
        return self.settings.active

    @property
    def recorded(self) -> Optional[SagMap]:
        return self._map

    def note(self, message: str) -> None:
        target = self.patch.notes if self.patch is not None else self.notes
        if message not in target:
            target.append(message)

    def close(self) -> None:
        """Leave the patch's interceptors and drop any state."""
        self.disarm()
        if self.patch is not None and self.intercept in self.patch.interceptors:
            self.patch.interceptors.remove(self.intercept)

    # ---- recording --------------------------------------------------------------------------
    def arm(self, uncond_rows: Rows) -> None:
        """Record the next model call(s): `uncond_rows` index the uncond rows of that call's batch.

        A1111 puts them last (slice(-n_uncond, None)), Forge/ComfyUI usually first. Negative
        indices count from the end of each call, so when A1111 splits cond and uncond into
        separate calls, the last call (the uncond one) is the one whose map is kept.
        Any map left from an earlier call is dropped.
        """
        self._map = None
        self._rows = uncond_rows if self._guides_now() else None

    def _guides_now(self) -> bool:
        """Active and inside the step window (the patch's step; no patch = always inside)."""
        if self.patch is None:
            return self.active
        return self.settings.guides(self.patch.step, self.patch.total)

    def stop_recording(self) -> None:
        """Record no further call; keep a map already recorded for the coming guidance."""
        self._rows = None

    def disarm(self) -> None:
        self._rows = None
        self._map = None

    def take_map(self) -> Optional[SagMap]:
        """The recorded map, removed from this object (it is never kept past one guidance)."""
        m, self._map = self._map, None
        return m

    def intercept(self, module, info, x: torch.Tensor, call):
        """SlothPatch interceptor: take over the recorded layer while armed; None elsewhere."""
        if self._rows is None or info.block != RECORDED_BLOCK or info.index != RECORDED_INDEX:
            return None
        rows = resolve_rows(self._rows, x.shape[0])
        if not rows:
            return None
        # the patch's grid is exact when it found one; unknown (None) is factorised from the map later
        grid = (call.grid.h, call.grid.w) if call.grid is not None else None
        return partial(self._record, rows=rows, grid=grid, upcast=self.upcast or call.upcast)

    def _record(self, module, x: torch.Tensor, *, rows: List[int], grid, upcast: bool) -> torch.Tensor:
        out, probs = attention_with_map(module, x, rows, upcast)
        self._map = SagMap(probs, module.heads, len(rows), grid)  # a later call replaces it
        return out

    # ---- guidance ---------------------------------------------------------------------------
    def guide(self, cfg: torch.Tensor, x: torch.Tensor, uncond: torch.Tensor, call_model: CallModel, *,
              space: Optional[NoiseSpace] = None, prediction: str = "x0", uncond_is_real: bool = True
              ) -> torch.Tensor:
        """cfg with SAG applied, or cfg itself (no model call) when this step cannot use SAG.

        cfg: the combined prediction [B, C, H, W]; x: the model input of the uncond rows
        [B, C, H, W]; uncond: the uncond rows' prediction [B, C, H, W]; call_model(x_in) runs the
        model on B rows with the uncond conditioning and returns the same kind of prediction.
        uncond_is_real=False when the WebUI skipped the uncond or filled it with copies of cond
        (CFG 1, NGMS, skip-early-CFG). The map is dropped and recording disarmed in every case,
        before the extra call, so the extra call never records.
        """
        sag_map = self.take_map()
        self._rows = None
        if not self._guides_now() or not uncond_is_real:
            return cfg  # outside the window: plain CFG, no extra call
        if sag_map is None:
            self.note("SAG: no attention map was recorded this step (no middle-block self-attention "
                      "saw the armed uncond rows, or the SagPass was created after the patch was entered); "
                      "the step ran without SAG")
            return cfg
        if sag_map.rows != uncond.shape[0]:
            self.note(f"SAG: the map covers {sag_map.rows} uncond images but {uncond.shape[0]} were "
                      "passed; the step ran without SAG")
            return cfg

        recorder = getattr(self.patch, "recorder", None)
        if recorder is not None:  # "Show Sloth maps": keep the first image's map of this step
            recorder.sag(self.patch.step, self.patch.total, sag_map, tuple(uncond.shape[-2:]))

        def counted(x_in: torch.Tensor) -> torch.Tensor:
            self.extra_calls += 1
            return call_model(x_in)

        return sag_guidance_pred(prediction, cfg, x, uncond, sag_map.probs, sag_map.heads, self.settings,
                                 counted, space=space, grid=sag_map.grid)
