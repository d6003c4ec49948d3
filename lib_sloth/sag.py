"""Self-Attention Guidance (Hong et al., ICCV 2023), backend-independent.

SAG is a guidance method (lib_sloth.guidance): the patch of a pass with SAG on holds one
`SagPass`, and a front end drives it per CFG step as it drives every guidance:

    sag.arm(uncond_rows)                         # before the UNet call(s) holding the uncond rows
    out = model(x_in, sigma_in, cond_in)         # the middle block's first attn1 records its map
    cfg = combine(out)                           # the WebUI's own CFG combine
    cfg = sag.guide(cfg, GuidedStep(x, out[uncond_rows], None, call_model, space, prediction))

`guide` drops the map whatever happens and returns cfg + scale * (degraded - sag_pred), where
degraded is the uncond prediction blurred where the uncond attends most and sag_pred the model's
prediction for it (one more model call, uncond conditioning). The math is in x0 space
(`sag_guidance`); `sag_guidance_pred` converts eps / v through lib_sloth.prediction.NoiseSpace.
Steps without a real uncond, or without a recorded map, return cfg itself with no model call.
Why this form, the re-noising and the memory bound: docs/design.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .fields import Validated, setting
from .guidance import Guidance, GuidedStep
from .layer_call import Plan
from .maps import Overlay
from .prediction import NoiseSpace
from .sag_capture import RECORDED_BLOCK, RECORDED_INDEX, Rows, SagMap, attention_with_map, resolve_rows
from .sag_mask import attention_mask, degrade, mask_from_received, mid_grid, received_attention


@dataclass(frozen=True)
class SagSettings(Validated):
    enabled: bool = setting(False, hint="Self-Attention Guidance: one more UNet pass per step (+~50 % time)")
    scale: float = setting(0.5, -2.0, 5.0, hint="Guidance strength; 0 = off; the effect saturates around 1.5")
    blur_sigma: float = setting(2.0, 0.0, 10.0, hint="Blur of the attended regions in latent cells; 0 = no blur")
    threshold: float = setting(1.0, 0.0, 4.0,
                               hint="Tokens receiving more attention than this are blurred; lower = larger blurred area")

    @property
    def active(self) -> bool:
        """Whether guidance changes anything (a scale of 0 adds nothing and costs no extra call)."""
        return self.enabled and self.scale != 0

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
    if kind == "x0":
        return sag_guidance(cfg, x, uncond, attn_map, heads, settings, call_model, space=space, grid=grid)
    if not settings.active:
        return cfg
    if space is None:
        raise ValueError(f"a {kind}-predicting model needs the NoiseSpace of this step to convert to x0")

    def call_x0(x_in: torch.Tensor) -> torch.Tensor:
        return space.to_x0(kind, x_in, call_model(x_in))  # converted at its own input, not at x

    result = sag_guidance(space.to_x0(kind, x, cfg), x, space.to_x0(kind, x, uncond), attn_map, heads,
                          settings, call_x0, space=space, grid=grid)
    return space.from_x0(kind, x, result)


# ---------------------------------------------------------------------------------------------
# Per-pass state
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MapRecordingPlan(Plan):
    """The recorded layer's full self-attention, keeping the fp32 map of `rows` through `keep`."""

    rows: Tuple[int, ...]
    grid: Optional[Tuple[int, int]]  # (h, w) when the patch knew it; None = factorised from the map later
    keep: Callable[[SagMap], None]

    def run(self, layer, x, k_in, v_in, upcast):
        out, probs = attention_with_map(layer, x, k_in, v_in, list(self.rows), upcast)
        self.keep(SagMap(probs, layer.heads, len(self.rows), self.grid))  # a later call replaces it
        return layer.to_out(out)

    def keys_per_query(self, h: int, w: int) -> float:
        return float(h * w)  # full attention, with an explicit map for the uncond rows


class SagPass(Guidance):
    """SAG for one sampling pass: the armed rows and at most one recorded map.

    Inactive settings (off or scale 0) join no patch, so the pass is bit-identical to one
    without SAG. The map is taken by `guide` and never kept past one step.
    """

    records = True
    extra_rows = "uncond"
    needs_layers = ((RECORDED_BLOCK, RECORDED_INDEX),)

    def __init__(self, settings: SagSettings, host=None):
        super().__init__(settings, host)
        self._rows: Optional[Rows] = None
        self._map: Optional[SagMap] = None

    @property
    def recorded(self) -> Optional[SagMap]:
        return self._map

    # ---- recording --------------------------------------------------------------------------
    def arm(self, uncond_rows: Rows) -> None:
        """Record the next model call(s): `uncond_rows` index the uncond rows of that call's batch.

        A1111 puts them last (slice(-n_uncond, None)), Forge/ComfyUI usually first. Negative
        indices count from the end of each call, so when A1111 splits cond and uncond into
        separate calls, the last call (the uncond one) is the one whose map is kept.
        Any map left from an earlier call is dropped.
        """
        self._map = None
        self._rows = uncond_rows if self.active else None

    def stop_recording(self) -> None:
        self._rows = None

    def disarm(self) -> None:
        self._rows = None
        self._map = None

    def take_map(self) -> Optional[SagMap]:
        """The recorded map, removed from this object (it is never kept past one guidance)."""
        m, self._map = self._map, None
        return m

    def record_plan(self, module, info, x: torch.Tensor, call) -> Optional[Plan]:
        """Take over the recorded layer while armed; None elsewhere."""
        if self._rows is None or info.block != RECORDED_BLOCK or info.index != RECORDED_INDEX:
            return None
        rows = resolve_rows(self._rows, x.shape[0])
        if not rows:
            return None
        # the patch's grid is exact when it found one; unknown (None) is factorised from the map later
        grid = (call.grid.h, call.grid.w) if call.grid is not None else None
        return MapRecordingPlan(tuple(rows), grid, self._keep)

    def _keep(self, sag_map: SagMap) -> None:
        self._map = sag_map

    # ---- guidance ---------------------------------------------------------------------------
    def guide(self, cfg: torch.Tensor, step: GuidedStep) -> torch.Tensor:
        """cfg with SAG applied, or cfg itself (no model call) when this step cannot use SAG.

        step.x: the model input of the uncond rows; step.uncond: their prediction (None when the
        WebUI skipped the uncond or filled it with copies of cond: CFG 1, NGMS, skip-early-CFG).
        The map is dropped and recording disarmed in every case, before the extra call, so the
        extra call never records.
        """
        sag_map = self.take_map()
        self._rows = None
        uncond = step.uncond
        if not self.active or uncond is None:
            return cfg
        if sag_map is None:
            self.note("SAG: no attention map was recorded this step (no middle-block self-attention "
                      "saw the armed uncond rows); the step ran without SAG")
            return cfg
        if sag_map.rows != uncond.shape[0]:
            self.note(f"SAG: the map covers {sag_map.rows} uncond images but {uncond.shape[0]} were "
                      "passed; the step ran without SAG")
            return cfg

        recorder = getattr(self.host, "recorder", None)
        if recorder is not None:  # "Show Sloth maps": keep the first image's map of this step
            recorder.overlay("sag", self.host.step, self.host.total,
                             sag_overlay(sag_map, tuple(uncond.shape[-2:]), self.settings))

        return sag_guidance_pred(step.prediction, cfg, step.x, uncond, sag_map.probs, sag_map.heads, self.settings,
                                 lambda x_in: self.extra_call(step, x_in), space=step.space, grid=sag_map.grid)


def sag_overlay(sag_map: SagMap, latent_hw: Tuple[int, int], settings: SagSettings):
    """What "Show Sloth maps" draws of one guided step: the first image's received attention (heat)
    and exactly the cells the engine blurs (`sag_mask.mask_from_received`, what `attention_mask` computes)."""
    heads = sag_map.heads
    probs = sag_map.probs[:heads]  # rows are image-major: the first uncond image's heads
    grid = sag_map.grid or mid_grid(probs.shape[-1], latent_hw)
    with torch.no_grad():  # one sum over the map; the mask is the engine's own function of it
        summed = received_attention(probs, heads)
        mask = mask_from_received(summed, latent_hw, settings.threshold, grid)[0, 0] > 0.5
        received = summed[0].reshape(grid)
    return Overlay(received.detach().float().cpu(), mask.cpu(),
                   f"threshold {settings.threshold:g}, blur sigma {settings.blur_sigma:g}",
                   "received attention (heat) and blurred cells (cyan)", "blurred")

