"""Stand-in for Forge's ``modules_forge/unet_patcher.py`` (lllyasviel/stable-diffusion-webui-forge,
tag ``previous``, class ``UnetPatcher(ModelPatcher)``).

Forge wraps the UNet in a ``UnetPatcher``: ComfyUI's ``ModelPatcher`` plus a handful of helpers
that store callables in ``model_options`` (or in ``model_options["transformer_options"]``). The
method names and signatures here are Forge's; the bodies are written for the tests.

What the bundled ComfyUI does *not* act on (stored only, so an extension can register them, but
nothing calls them during sampling):

* ``block_modifiers`` / ``block_inner_modifiers`` — Forge's UNet forward and
  ``forward_timestep_embed`` call them; ComfyUI's do not. Registering one warns.
* ``controlnet_*``, ``alphas_cumprod_modifiers``, memory hints — handled by Forge's
  processing / sampler code, which the tests do not have.

``conditioning_modifiers`` and ``sampler_pre_cfg_function`` are honoured by
``modules_forge.forge_sampler`` (the tests' Forge-flavoured sampling entry point), not by
``comfy.samplers.sampling_function``.
"""

import copy
import warnings

from ldm_patched.modules.model_patcher import ModelPatcher

__all__ = ["UnetPatcher"]

_BLOCK_NAMES = ("input", "middle", "output")


class UnetPatcher(ModelPatcher):
    """``ModelPatcher`` with Forge's extension helpers.

    ``clone()`` follows Forge: weight-patch lists are copied per key, object patches are copied
    shallowly, ``model_options`` is deep-copied (so a patch *object* registered on the original is
    duplicated, not shared, in the clone), the torch model itself is shared.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None
        self.extra_preserved_memory_during_sampling = 0
        self.extra_model_patchers_during_sampling = []
        self.extra_concat_condition = None

    # -- copying --------------------------------------------------------------------------------

    def clone(self):
        other = UnetPatcher(
            self.model,
            self.load_device,
            self.offload_device,
            self.size,
            self.current_device,
            weight_inplace_update=self.weight_inplace_update,
        )
        other.patches = {key: list(value) for key, value in self.patches.items()}
        other.object_patches = dict(self.object_patches)
        other.model_options = copy.deepcopy(self.model_options)
        other.model_keys = self.model_keys
        if hasattr(self, "patches_uuid"):  # ComfyUI-only bookkeeping; Forge has none
            other.patches_uuid = self.patches_uuid
        other.controlnet_linked_list = self.controlnet_linked_list
        other.extra_preserved_memory_during_sampling = self.extra_preserved_memory_during_sampling
        other.extra_model_patchers_during_sampling = list(self.extra_model_patchers_during_sampling)
        other.extra_concat_condition = self.extra_concat_condition
        return other

    # -- memory / extra modules (bookkeeping only in the tests) ---------------------------------

    def add_extra_preserved_memory_during_sampling(self, memory_in_bytes: int):
        self.extra_preserved_memory_during_sampling += memory_in_bytes

    def add_extra_model_patcher_during_sampling(self, model_patcher):
        self.extra_model_patchers_during_sampling.append(model_patcher)

    def add_extra_torch_module_during_sampling(self, m, cast_to_unet_dtype: bool = True):
        if cast_to_unet_dtype:
            m.to(self.model.diffusion_model.dtype)
        patcher = ModelPatcher(model=m, load_device=self.load_device, offload_device=self.offload_device)
        self.add_extra_model_patcher_during_sampling(patcher)
        return patcher

    def set_memory_peak_estimation_modifier(self, modifier):
        self.model_options["memory_peak_estimation_modifier"] = modifier

    # -- controlnet chain (kept so that code walking it does not crash) -------------------------

    def add_patched_controlnet(self, cnet):
        cnet.set_previous_controlnet(self.controlnet_linked_list)
        self.controlnet_linked_list = cnet

    def list_controlnets(self):
        found = []
        node = self.controlnet_linked_list
        while node is not None:
            found.append(node)
            node = node.previous_controlnet
        return found

    def add_controlnet_conditioning_modifier(self, modifier, ensure_uniqueness=False):
        self.append_transformer_option("controlnet_conditioning_modifiers", modifier, ensure_uniqueness)

    def set_controlnet_model_function_wrapper(self, wrapper):
        self.set_transformer_option("controlnet_model_function_wrapper", wrapper)

    # -- generic option helpers -----------------------------------------------------------------

    def append_model_option(self, k, v, ensure_uniqueness=False):
        """Append ``v`` to the list ``model_options[k]`` (created on first use)."""
        items = self.model_options.setdefault(k, [])
        if ensure_uniqueness and v in items:
            return
        items.append(v)

    def append_transformer_option(self, k, v, ensure_uniqueness=False):
        """Append ``v`` to the list ``model_options["transformer_options"][k]``."""
        options = self.model_options.setdefault("transformer_options", {})
        items = options.setdefault(k, [])
        if ensure_uniqueness and v in items:
            return
        items.append(v)

    def set_transformer_option(self, k, v):
        """Set ``model_options["transformer_options"][k] = v``: every attention patch of every
        UNet call sees it in ``extra_options`` (the block copies transformer_options)."""
        self.model_options.setdefault("transformer_options", {})[k] = v

    # -- sampling hooks -------------------------------------------------------------------------

    def add_conditioning_modifier(self, modifier, ensure_uniqueness=False):
        """``modifier(model, x, timestep, uncond, cond, cond_scale, model_options, seed)`` returns
        the same 8-tuple; Forge calls it once per denoiser call, before ``sampling_function``."""
        self.append_model_option("conditioning_modifiers", modifier, ensure_uniqueness)

    def add_sampler_pre_cfg_function(self, modifier, ensure_uniqueness=False):
        """Old-Forge form: ``modifier(model, cond, uncond, x, timestep, model_options)`` returns the
        same 6-tuple and runs inside ``sampling_function`` *before* the UNet calls. (reForge and
        later ComfyUI changed this to ``fn(args) -> conds_out``, run *after* them.)"""
        self.append_model_option("sampler_pre_cfg_function", modifier, ensure_uniqueness)

    def add_alphas_cumprod_modifier(self, modifier, ensure_uniqueness=False):
        self.append_model_option("alphas_cumprod_modifiers", modifier, ensure_uniqueness)

    # -- UNet structure hooks (not run by the bundled ComfyUI UNet) -----------------------------

    def add_block_modifier(self, modifier, ensure_uniqueness=False):
        """Forge calls ``modifier(h, "before"|"after", transformer_options)`` around every input,
        middle and output block and around the final ``out`` layer (block ``("last", 0)``)."""
        warnings.warn(
            "block_modifiers are stored but never called by the bundled ComfyUI UNet",
            RuntimeWarning,
            stacklevel=2,
        )
        self.append_transformer_option("block_modifiers", modifier, ensure_uniqueness)

    def add_block_inner_modifier(self, modifier, ensure_uniqueness=False):
        """Forge calls ``modifier(x, "before"|"after", layer, layer_index, block, transformer_options)``
        around every layer inside a block."""
        warnings.warn(
            "block_inner_modifiers are stored but never called by the bundled ComfyUI UNet",
            RuntimeWarning,
            stacklevel=2,
        )
        self.append_transformer_option("block_inner_modifiers", modifier, ensure_uniqueness)

    def set_model_replace_all(self, patch, target="attn1"):
        """Register ``patch`` as the ``target`` replacement for every (block, number, index) key
        Forge enumerates: input/middle/output × 16 × 16."""
        for block_name in _BLOCK_NAMES:
            for number in range(16):
                for transformer_index in range(16):
                    self.set_model_patch_replace(patch, target, block_name, number, transformer_index)

    # -- Forge's ModelPatcher has these two; ComfyUI's of this vintage does not -----------------

    def set_model_vae_encode_wrapper(self, wrapper_function):
        self.model_options["model_vae_encode_wrapper"] = wrapper_function

    def set_model_vae_decode_wrapper(self, wrapper_function):
        self.model_options["model_vae_decode_wrapper"] = wrapper_function

    # -- conditioning -----------------------------------------------------------------------------

    def encode_conds_after_clip(self, conds, noise, prompt_type="positive"):
        from ldm_patched.modules.sample import convert_cond
        from ldm_patched.modules.samplers import encode_model_conds

        return encode_model_conds(
            model_function=self.model.extra_conds,
            conds=convert_cond(conds),
            noise=noise,
            device=noise.device,
            prompt_type=prompt_type,
        )
