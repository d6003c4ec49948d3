"""Forge main adapter (lllyasviel/stable-diffusion-webui-forge since 2024-08: the ``backend`` package,
no ``ldm_patched``, gradio 4.40): one sampling pass = one cloned ``backend.patcher.unet.UnetPatcher``.

Facts this relies on (read from Forge main @ dfdcbab6, 2025-06-26):

- ``modules/processing.py`` resets ``p.sd_model.forge_objects`` from ``forge_objects_after_applying_lora``
  and applies the WebUI's token merging right before every ``process_before_every_sampling`` (first
  pass, img2img, and the hires pass, whose hook runs twice with a reset in between); so attaching
  is the shared clone-patch-assign of `comfy_pass.attach_clone`, idempotent per call.
- ``backend/nn/unet.py``'s ``CrossAttention`` has ``heads``, bias-free ``to_q/to_k/to_v`` and a
  ``to_out`` Sequential, and ``forward(x, context=None, value=None, mask=None, transformer_options={})``;
  its transformer block calls attn1 with ``context=None, value=None`` unless an attn1_patch ran. The
  engine class-patches it like any other attention class (a ``transformer_options`` keyword is not
  a foreign input) and chains to the forward it found, which calls ``backend.attention.attention_function``.
- ``backend/sampling/sampling_function.py``: ``calc_cond_uncond_batch(model, cond, uncond, x_in,
  timestep, model_options)`` (a guidance's extra call); CFG 1 drops the uncond unless
  ``disable_cfg1_optimization``; the CFG denoiser samples the hires pass with ``p.hr_cfg`` and turns
  NGMS / skip early CFG into ``cond_scale = 1``.
- ``backend/misc/tomesd.py``: the WebUI's token merging is a ``TomePatcher`` attn1_patch plus an
  attn1_output_patch on the same clone. Layers whose tokens it merged are left to it (shared
  logic); methods that merge tokens themselves (`Method.yields_to_token_merging`: AgentSD) are
  switched off while it is on.
- ``backend/diffusion_engine/base.py``: ``is_webui_legacy_model()`` is false for Flux (and other
  non-UNet models); it is *true* for SD3, which is an MMDiT all the same. Neither has a UNet's
  attn1 layers: nothing is patched, one note says so, the info text keeps no method keys.
- The built-in SAG (``extensions-builtin/sd_forge_sag``) replaces the middle block's first attn1 and
  writes ``sag_enabled``; the shared logic warns when it runs together with ours.
"""
from __future__ import annotations

import importlib
from typing import List, Optional

from .. import methods
from .backend import Backend, NothingPatched
from .comfy_pass import Substrate, attach_clone, is_unet

TOMESD_MODULE = "backend.misc.tomesd"  # where Forge main's TomePatcher defines its patch functions
TOKEN_MERGING_WHERE = "the WebUI's token merging (Forge's 'Token merging ratio') is active on this pass"

class ForgeMainBackend(Backend):
    name = "Forge (backend)"

    def attach(self, p, settings, seed: int) -> List[str]:
        skipped = not_a_unet(p)
        if skipped:
            return NothingPatched([skipped])
        notes = []
        patcher = p.sd_model.forge_objects.unet
        yielding = methods.standing_down_for_token_merging(settings)
        if yielding and webui_token_merging(getattr(patcher, "model_options", None) or {}):
            settings = methods.without(settings, [m.name for m in yielding])
            notes.extend(methods.token_merging_note(m, TOKEN_MERGING_WHERE) for m in yielding)
        return attach_clone(p, settings, seed, FORGE_MAIN, notes)


def not_a_unet(p) -> Optional[str]:
    """Why this job's model is no UNet Sloth can patch (a one-line note), or None for SD1.x/2.x/XL."""
    sd_model = getattr(p, "sd_model", None)
    legacy = getattr(sd_model, "is_webui_legacy_model", None)
    kind = None
    if callable(legacy) and not legacy():
        kind = "Flux or another non-UNet model"
    elif getattr(sd_model, "is_sd3", False):
        kind = "SD3, an MMDiT"
    else:
        model = getattr(getattr(getattr(sd_model, "forge_objects", None), "unet", None), "model", None)
        diffusion_model = getattr(model, "diffusion_model", None)
        if diffusion_model is not None and not is_unet(diffusion_model):
            kind = f"{type(diffusion_model).__name__}, not a UNet"
    if kind is None:
        return None
    return (f"Sloth skipped this model ({kind}): its methods rewrite a UNet's self-attention (SD 1.x, SD 2.x, "
            "SDXL). Nothing was patched.")


def webui_token_merging(model_options) -> bool:
    """True if Forge's own token merging (backend/misc/tomesd.py) patched this UnetPatcher."""
    patches = (model_options.get("transformer_options") or {}).get("patches") or {}
    return any(getattr(fn, "__module__", None) == TOMESD_MODULE for fn in patches.get("attn1_patch") or ())


def _x0_for(model, conds, x_in, sigma, model_options):
    """One UNet pass with one conditioning only (Forge main's calc_cond_uncond_batch)."""
    sampling = importlib.import_module("backend.sampling.sampling_function")
    return sampling.calc_cond_uncond_batch(model, conds, None, x_in, sigma, model_options)[0]


FORGE_MAIN = Substrate(name="Forge (backend)", x0_for=_x0_for)
