"""Stand-in for the ``forge_objects`` container of Forge's ``modules_forge/forge_loader.py``
(lllyasviel/stable-diffusion-webui-forge, tag ``previous``, class ``ForgeSD``).

In Forge, ``sd_model.forge_objects`` is a ``ForgeSD(unet, clip, vae, clipvision)``. The model also
keeps ``forge_objects_original`` and ``forge_objects_after_applying_lora``, both made with
``shallow_copy()``. ``modules/processing.py`` re-assigns
``p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()``
right before every ``process_before_every_sampling`` call (first pass, hires pass, img2img), so an
extension does ``unet = p.sd_model.forge_objects.unet.clone()``, patches the clone and assigns it
back; the patch then lives for one sampling pass only.

``shallow_copy`` copies the four references, not the objects: assigning ``.unet`` on the copy
leaves the original untouched, but mutating the shared ``unet`` *in place* (instead of cloning
it) leaks into every later pass.
"""

__all__ = ["ForgeSD", "ForgeObjects", "attach_forge_objects"]


class ForgeSD:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeSD(self.unet, self.clip, self.vae, self.clipvision)


#: The name the tests' brief uses for the same container.
ForgeObjects = ForgeSD


def attach_forge_objects(sd_model, unet, clip=None, vae=None, clipvision=None):
    """Give a stand-in ``sd_model`` the three attributes Forge's loader sets on a real one."""
    objects = ForgeSD(unet, clip, vae, clipvision)
    sd_model.forge_objects = objects
    sd_model.forge_objects_original = objects.shallow_copy()
    sd_model.forge_objects_after_applying_lora = objects.shallow_copy()
    return sd_model
