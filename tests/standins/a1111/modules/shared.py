"""Stand-in for A1111 v1.10.1 ``modules/shared.py`` (written from the API, not the real code).

Module-level slots with the real names: ``opts`` (an ``options.Options`` built from
the stand-in ``shared_options.options_templates``), ``state`` (a
``shared_state.State``), ``sd_model`` (``None`` until a test assigns a model),
``cmd_opts``, ``device``, ``total_tqdm``, ``prompt_styles``, ``latent_upscale_modes``,
``sd_upscalers``, ``OptionInfo``/``OptionHTML``/``options_section``.

In the real WebUI these are filled by ``shared_init.initialize()`` at start-up; here
they are filled at import.  ``reset_for_tests()`` puts ``opts``/``state`` back to the
defaults *in place* (other modules bind them with ``from modules.shared import opts``).
"""
import sys
import types

import torch

from modules import options, shared_options, shared_state, paths

cmd_opts = types.SimpleNamespace(
    api=False,
    nowebui=False,
    freeze_settings=False,
    hide_ui_dir_config=False,
    no_prompt_history=True,
    disable_nan_check=True,
    embeddings_dir=paths.data_path + "/embeddings",
    lowvram=False,
    medvram=False,
    no_half=True,
    precision="full",
)

batch_cond_uncond = True  # legacy module-level flag kept by the real file; unused
parallel_processing_allowed = True

demo = None
device = torch.device("cpu")
weight_load_location = None
xformers_available = False
hypernetworks = {}
loaded_hypernetworks = []

options_templates = shared_options.options_templates
restricted_opts = set()
opts = options.Options(options_templates, restricted_opts)
_default_option_keys = frozenset(options_templates)
state = shared_state.State()

sd_model = None
"""The loaded model; tests assign a LatentDiffusion-like object here."""

settings_components = None
tab_names = []

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}
sd_upscalers = []
face_restorers = []
progress_print_out = sys.stdout

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML


class _TotalTQDM:
    """No-op replacement of the console progress bar (``shared_total_tqdm.TotalTQDM``)."""

    def __init__(self):
        self.total = 0
        self.done = 0

    def reset(self):
        self.done = 0

    def update(self):
        self.done += 1

    def updateTotal(self, new_total):
        self.total = new_total

    def clear(self):
        self.done = 0


class _PromptStyles:
    """Style database without styles: prompts pass through unchanged."""

    styles = {}

    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt

    def extract_styles_from_prompt(self, prompt, negative_prompt):
        return [], prompt, negative_prompt


total_tqdm = _TotalTQDM()
prompt_styles = _PromptStyles()


def reset_for_tests():
    """Restore default option values and a fresh sampling state, in place."""
    for key in list(opts.data_labels.keys()):
        if key not in _default_option_keys:
            del opts.data_labels[key]
    opts.data = {k: v.default for k, v in opts.data_labels.items() if not v.do_not_save}
    for info in opts.data_labels.values():
        info.onchange = None
    fresh = shared_state.State()
    state.__dict__.clear()
    state.__dict__.update(fresh.__dict__)
    total_tqdm.total = 0
    total_tqdm.done = 0
