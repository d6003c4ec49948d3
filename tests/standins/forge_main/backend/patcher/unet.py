"""Stand-in of Forge main's ``backend/patcher/unet.py`` ``UnetPatcher(ModelPatcher)`` (commit dfdcbab6).

``clone()`` is the base clone plus Forge's extra fields (controlnet list, preserved memory, extra
patchers, ``extra_concat_condition``); the option helpers store callables the way Forge main's
do. ``from_model`` is not reproduced: the tests wrap a ComfyUI ``BaseModel`` (Forge main wraps its
``KModel``; both expose ``diffusion_model`` and ``apply_model(x, t, c_concat, c_crossattn,
control, transformer_options, **kw)``).
"""
from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None
        self.extra_preserved_memory_during_sampling = 0
        self.extra_model_patchers_during_sampling = []
        self.extra_concat_condition = None

    def clone(self):
        other = UnetPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        base = ModelPatcher.clone(self)
        other.lora_patches, other.object_patches, other.model_options = (base.lora_patches, base.object_patches,
                                                                         base.model_options)
        other.controlnet_linked_list = self.controlnet_linked_list
        other.extra_preserved_memory_during_sampling = self.extra_preserved_memory_during_sampling
        other.extra_model_patchers_during_sampling = list(self.extra_model_patchers_during_sampling)
        other.extra_concat_condition = self.extra_concat_condition
        return other

    def append_model_option(self, k, v, ensure_uniqueness=False):
        items = self.model_options.setdefault(k, [])
        if not (ensure_uniqueness and v in items):
            items.append(v)

    def append_transformer_option(self, k, v, ensure_uniqueness=False):
        items = self.model_options.setdefault("transformer_options", {}).setdefault(k, [])
        if not (ensure_uniqueness and v in items):
            items.append(v)

    def set_transformer_option(self, k, v):
        self.model_options.setdefault("transformer_options", {})[k] = v

    def add_conditioning_modifier(self, modifier, ensure_uniqueness=False):
        self.append_model_option("conditioning_modifiers", modifier, ensure_uniqueness)

    def add_sampler_pre_cfg_function(self, modifier, ensure_uniqueness=False):
        self.append_model_option("sampler_pre_cfg_function", modifier, ensure_uniqueness)
