"""Stand-in of Forge main's ``backend/patcher/base.py`` ``ModelPatcher`` (commit dfdcbab6).

What Forge main's class does and Sloth relies on, written for the tests (the method names and
signatures are Forge main's): ``model_options`` starts as ``{"transformer_options": {}}``;
``clone()`` shares the torch model and deep-copies ``model_options`` (functions are copied by
reference, bound methods would drag their instance along); ``set_model_unet_function_wrapper``
stores ``model_options["model_function_wrapper"]``; ``set_model_sampler_post_cfg_function(fn,
disable_cfg1_optimization)`` appends to ``sampler_post_cfg_function`` (a new list) and may set
``disable_cfg1_optimization``; attn1/attn2 patches append to
``transformer_options["patches"][name]``; ``set_model_patch_replace`` stores
``transformer_options["patches_replace"][name][(block_name, number[, index])]`` on copied dicts.

Not reproduced: LoRA loading, memory management and device moves (everything stays on the CPU).
ComfyUI 0.3.75's ``calc_cond_batch``, which the sampling stand-in calls, wants a
``model.current_patcher`` with ComfyUI's hook methods; `ComfyHooksShim` gives it the no-hook
answers (Forge main has no hooks at all).
"""
import copy


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    options = dict(model_options["transformer_options"])
    replace = dict(options.get("patches_replace", {}))
    by_block = dict(replace.get(name, {}))
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    by_block[key] = patch
    replace[name] = by_block
    options["patches_replace"] = replace
    model_options["transformer_options"] = options
    return model_options


def set_model_options_post_cfg_function(model_options, post_cfg_function, disable_cfg1_optimization=False):
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


class ComfyHooksShim:
    """The answers ComfyUI's ``_calc_cond_batch`` expects from ``model.current_patcher`` without hooks."""

    def prepare_state(self, timestep):
        return None

    def apply_hooks(self, hooks):
        return {}

    def prepare_hook_patches_current_keyframe(self, timestep, hooks, model_options):
        return None


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, **kwargs):
        self.size = size
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = offload_device if current_device is None else current_device
        if getattr(model, "current_patcher", None) is None:
            model.current_patcher = ComfyHooksShim()

    def clone(self):
        other = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        other.lora_patches = dict(self.lora_patches)
        other.object_patches = dict(self.object_patches)
        other.model_options = copy.deepcopy(self.model_options)
        return other

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape)

    def set_model_sampler_cfg_function(self, sampler_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options = set_model_options_post_cfg_function(self.model_options, post_cfg_function,
                                                                 disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_pre_cfg_function"] = (self.model_options.get("sampler_pre_cfg_function", [])
                                                          + [pre_cfg_function])
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_patch(self, patch, name):
        options = self.model_options["transformer_options"]
        patches = options.setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name, number,
                                                             transformer_index)

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch):
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch):
        self.set_model_patch(patch, "attn1_output_patch")
