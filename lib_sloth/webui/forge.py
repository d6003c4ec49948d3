"""Forge / reForge adapter (the ``ldm_patched`` line): one sampling pass = one cloned UnetPatcher.

The pass lifecycle, the model function wrapper, SAG's rows by ``cond_or_uncond`` and its post-CFG
guidance are shared with Forge main's adapter (`lib_sloth.webui.comfy_pass`). What is particular
to this line is only a guidance's extra UNet call: reForge has ComfyUI's newer
``ldm_patched.modules.samplers.calc_cond_batch(model, [conds], ...)``, old Forge (tag
``previous``) only ``calc_cond_uncond_batch(model, cond, uncond, ...)``.
"""
from __future__ import annotations

import importlib
from typing import List

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


LDM_PATCHED = Substrate(name="Forge (ldm_patched)", x0_for=_x0_for)
