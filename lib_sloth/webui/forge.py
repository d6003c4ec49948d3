"""Forge / reForge adapter (the ``ldm_patched`` line): one sampling pass = one cloned UnetPatcher.

The pass lifecycle, the model function wrapper, SAG's rows by ``cond_or_uncond`` and its post-CFG
guidance are shared with Forge main's adapter (`lib_sloth.webui.comfy_pass`). What is particular
to this line is only a guidance's extra UNet call: reForge has ComfyUI's newer
``ldm_patched.modules.samplers.calc_cond_batch(model, [conds], ...)``, old Forge (tag
``previous``) only ``calc_cond_uncond_batch(model, cond, uncond, ...)``.
"""
from __future__ import annotations

import importlib
import sys
from typing import List

import torch

from .backend import Backend
from .comfy_pass import Substrate, attach_clone


class ForgeBackend(Backend):
    name = "Forge (ldm_patched)"

    def attach(self, p, settings, seed: int) -> List[str]:
        return attach_clone(p, settings, seed, LDM_PATCHED)


def _x0_for(model, conds, x_in, sigma, model_options):
    """One UNet pass with one conditioning only: reForge's calc_cond_batch, else old Forge's."""
    samplers = importlib.import_module("ldm_patched.modules.samplers")
    calc = getattr(samplers, "calc_cond_batch", None)
    if calc is not None:
        return calc(model, [conds], x_in, sigma, model_options)[0]
    return samplers.calc_cond_uncond_batch(model, conds, None, x_in, sigma, model_options)[0]


def _upcast_for(module) -> bool:
    """Whether Sloth's rewritten attention of this attn1 layer runs in fp32 (SlothPatch.upcast_for).

    reForge's global flag first: ``--force-upcast-attention`` (and macOS 14.5+) sets
    ``FORCE_UPCAST_ATTENTION_DTYPE = {torch.float16: torch.float32}`` once, at import of
    ``ldm_patched/ldm/modules/attention.py`` (line 54, from ``model_management.force_upcast_attention_dtype``,
    ``ldm_patched/modules/model_management.py`` line 1145). Old Forge (tag ``previous``) has no such
    constant. Otherwise the layer's own ``attn_precision`` (fp32 for the models that need it).
    reForge's own ``get_attn_precision`` (attention.py lines 56-58) returns None when the flag is set (it
    tests ``force_upcast_attention`` where ComfyUI tests ``dont_upcast_attention``), so reForge's own
    split / sub-quadratic attention does not upcast then; Sloth follows the flag's stated meaning.
    """
    forced = getattr(sys.modules.get("ldm_patched.ldm.modules.attention"), "FORCE_UPCAST_ATTENTION_DTYPE", None)
    if forced and forced.get(torch.float16) is torch.float32:
        return True
    return getattr(module, "attn_precision", None) is torch.float32


LDM_PATCHED = Substrate(name="Forge (ldm_patched)", x0_for=_x0_for, upcast_for=_upcast_for)
