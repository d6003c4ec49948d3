"""sd-webui-sloth engine: training-free self-attention rewrites for Stable Diffusion UNets.

Pure torch + einops; imports no WebUI module (the adapters live in lib_sloth.webui).

    with SlothPatch(unet, settings_from_dict({...}), seed=seed) as patch:
        patch.set_step(step, total)
        ...   # guidance methods (SAG): patch.guidances, driven as lib_sloth.guidance describes
"""
from .fields import SettingsError
from .patch import SlothPatch
from .prediction import NoiseSpace
from .presets import PRESETS, preset
from .sag import SagPass
from .settings import SlothSettings, iter_fields, settings_from_dict, to_dict, to_flat

__all__ = ["SlothPatch", "SagPass", "NoiseSpace", "SlothSettings", "SettingsError",
           "settings_from_dict", "preset", "PRESETS", "iter_fields", "to_dict", "to_flat"]
