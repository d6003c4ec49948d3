"""Stand-in of Forge main's ``backend/diffusion_engine/base.py`` (commit dfdcbab6): what
``p.sd_model`` is.

``ForgeObjects(unet, clip, vae, clipvision)`` with ``shallow_copy()``; the engine keeps
``forge_objects``, ``forge_objects_original`` and ``forge_objects_after_applying_lora`` (the copy
``modules/processing.py`` resets ``forge_objects`` from before every sampling pass), the flags
``is_sd1`` / ``is_sd2`` / ``is_sdxl`` / ``is_sd3`` and ``is_webui_legacy_model()`` = any of them
(true for SD3 as well; false for Flux, Chroma, ...). Loading, text encoders and the VAE are not
reproduced.
"""


class ForgeObjects:
    def __init__(self, unet, clip=None, vae=None, clipvision=None):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    def __init__(self, unet, kind="sd1"):
        self.is_sd1 = kind == "sd1"
        self.is_sd2 = kind == "sd2"
        self.is_sdxl = kind == "sdxl"
        self.is_sd3 = kind == "sd3"
        self.forge_objects = ForgeObjects(unet)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()

    def is_webui_legacy_model(self):
        return self.is_sd1 or self.is_sd2 or self.is_sdxl or self.is_sd3
