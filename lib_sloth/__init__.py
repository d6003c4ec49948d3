"""sd-webui-sloth engine: training-free self-attention rewrites for Stable Diffusion UNets.

Pure torch + einops; imports no WebUI module (the adapters live in lib_sloth.webui).

    with SlothPatch(unet, settings_from_dict({...}), seed=seed) as patch:
        sag = SagPass(settings.sag, patch)   # optional: create before the first model call
        patch.set_step(step, total)
        ...
"""
from .patch import SlothPatch, sloth_patch
from .prediction import NoiseSpace
from .sag import SagPass
from .settings import (PRESETS, SettingsError, SlothSettings, iter_fields, preset, settings_from_dict,
                       to_dict, to_flat)

__all__ = ["SlothPatch", "sloth_patch", "SagPass", "NoiseSpace", "SlothSettings", "SettingsError",
           "settings_from_dict", "preset", "PRESETS", "iter_fields", "to_dict", "to_flat"]
