"""Helpers for tests that use the A1111 stand-in (not a WebUI file).

Put this directory on ``sys.path`` (``sys.path.insert(0, ".../tests/standins/a1111")``)
and use::

    import standin
    standin.reset()                      # fresh opts/state/callbacks/scripts
    standin.use_model(model)             # shared.sd_model = model
    standin.load_scripts([ext_root])     # like start-up: xyz_grid, extension, builtins
    standin.start_ui()                   # before_ui callbacks, build both tabs' script UIs
    p = standin.txt2img(prompt="a", steps=4, width=64, height=64, sampler_name="Euler")
    processed = standin.run(p)           # scripts.run(...) or process_images(p)

``start_ui`` mirrors the order of ``webui.py``/``ui.create_ui``: ``before_ui_callback``,
txt2img tab (sections: sampler, accordions, seed, then ``setup_ui`` for the
"scripts" section: section-less always-on scripts, the script dropdown, selectable
scripts), img2img tab, ``add_paste_fields`` per tab, ``ui_settings_callback``, and --
with ``api=True`` -- ``Api.init_default_script_args`` for both runners.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gradio as gr  # noqa: E402
import torch  # noqa: E402

import k_diffusion.sampling  # noqa: E402
from modules import errors, extensions, infotext_utils, patches, processing, script_callbacks, scripts, shared  # noqa: E402
from modules.api import api as api_module  # noqa: E402

SECTION_ORDER = ["prompt", "image", "inpaint", "sampler", "accordions", "checkboxes", "dimensions", "cfg", "denoising", "seed", "batch", "override_settings"]

api = None
"""The ``Api`` instance created by ``start_ui(api=True)``."""

tab_components = {}
"""``{"txt2img": {...}, "img2img": {...}}``: the base components built per tab."""


def reset():
    global api
    shared.reset_for_tests()
    shared.sd_model = None
    script_callbacks.clear_callbacks()
    scripts.scripts_data.clear()
    scripts.scripts_txt2img = None
    scripts.scripts_img2img = None
    infotext_utils.reset()
    extensions.extensions.clear()
    patches.originals.clear()
    errors.exception_records.clear()
    processing.StableDiffusionProcessing.cached_c = [None, None]
    processing.StableDiffusionProcessing.cached_uc = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
    processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
    k_diffusion.sampling.torch = torch
    api = None
    tab_components.clear()


def use_model(model):
    shared.sd_model = model
    return model


def load_scripts(extension_dirs=(), *, xyz_module_name="xyz_grid.py"):
    scripts.load_scripts(extension_dirs)
    if xyz_module_name != "xyz_grid.py":
        register_xyz_grid(xyz_module_name)


def xyz_grid_module():
    """The xyz module the way extensions find it: through ``scripts.scripts_data``."""
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid"):
            return data.module
    raise LookupError("xyz_grid is not loaded")


def register_xyz_grid(module_name="scripts.xyz_grid"):
    """Make the loaded xyz_grid look as if it had been imported as ``module_name``."""
    module = xyz_grid_module()
    module.__name__ = module_name
    for data in scripts.scripts_data:
        if data.module is module:
            data.script_class.__module__ = module_name
    return module


def _build_tab(runner, is_img2img):
    tabname = "img2img" if is_img2img else "txt2img"
    runner.initialize_scripts(is_img2img=is_img2img)
    runner.prepare_ui()
    comps = {}
    with gr.Blocks():
        comps["prompt"] = gr.Textbox(label="Prompt", elem_id=f"{tabname}_prompt")
        comps["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id=f"{tabname}_neg_prompt")
        custom = []
        for script in scripts.scripts_txt2img.scripts + scripts.scripts_img2img.scripts:
            if isinstance(script.section, str) and script.section not in SECTION_ORDER and script.section not in custom:
                custom.append(script.section)
        for section in SECTION_ORDER + custom + ["scripts"]:
            if section == "scripts":
                runner.setup_ui()
            if section == "dimensions":
                comps["width"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512, elem_id=f"{tabname}_width")
                comps["height"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512, elem_id=f"{tabname}_height")
            elif section == "cfg":
                comps["cfg_scale"] = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, label='CFG Scale', value=7.0, elem_id=f"{tabname}_cfg_scale")
            elif section == "batch":
                comps["batch_size"] = gr.Slider(minimum=1, maximum=8, step=1, label='Batch size', value=1, elem_id=f"{tabname}_batch_size")
            runner.setup_ui_for_section(section)

    fields = [
        infotext_utils.PasteField(comps["prompt"], "Prompt", api="prompt"),
        infotext_utils.PasteField(comps["negative_prompt"], "Negative prompt", api="negative_prompt"),
        infotext_utils.PasteField(comps["cfg_scale"], "CFG scale", api="cfg_scale"),
        infotext_utils.PasteField(comps["width"], "Size-1", api="width"),
        infotext_utils.PasteField(comps["height"], "Size-2", api="height"),
        infotext_utils.PasteField(comps["batch_size"], "Batch size", api="batch_size"),
        *runner.infotext_fields,
    ]
    infotext_utils.add_paste_fields(tabname, None, fields, None)
    tab_components[tabname] = comps
    return fields


def start_ui(*, api_enabled=True):
    """Run the UI start-up sequence for the script machinery (no server)."""
    global api
    script_callbacks.before_ui_callback()
    scripts.scripts_current = scripts.scripts_txt2img
    _build_tab(scripts.scripts_txt2img, False)
    scripts.scripts_current = scripts.scripts_img2img
    _build_tab(scripts.scripts_img2img, True)
    scripts.scripts_current = None
    script_callbacks.ui_settings_callback()
    if api_enabled:
        api = api_module.Api()
        api.default_script_arg_txt2img = api.init_default_script_args(scripts.scripts_txt2img)
        api.default_script_arg_img2img = api.init_default_script_args(scripts.scripts_img2img)


def ui_script_args(runner, overrides=None):
    """The ``*args`` the UI sends: the script dropdown index (0 = None) followed by every
    script component's value; ``overrides`` maps an input index or a component to a value."""
    def sent(component):
        value = getattr(component, "value", None)
        try:
            return component.preprocess(value)  # what gradio hands to the python function
        except Exception:
            return value

    values = [0] + [sent(c) for c in runner.inputs[1:]]
    for key, value in (overrides or {}).items():
        index = key if isinstance(key, int) else runner.inputs.index(key)
        values[index] = value
    return tuple(values)


def script_args_for(runner, script_title, values, base=None):
    """Return ``base`` (default: ``ui_script_args(runner)``) with ``values`` placed at
    ``script.args_from`` for the script titled ``script_title``."""
    script = runner.script(script_title)
    args = list(base if base is not None else ui_script_args(runner))
    for i, v in enumerate(values):
        args[script.args_from + i] = v
    return tuple(args)


def _make(cls, runner, script_args, kwargs):
    p = cls(sd_model=shared.sd_model, **kwargs)
    p.scripts = runner
    p.script_args = script_args if script_args is not None else ui_script_args(runner)
    return p


def txt2img(script_args=None, **kwargs):
    """A txt2img ``p`` created like ``modules/txt2img.py`` (``p.scripts`` then
    ``p.script_args``, which runs ``setup()`` hooks -- including the built-in Sampler
    and Seed scripts, so pass ``steps``/``sampler_name``/``seed`` through script args
    or set them on ``p`` afterwards)."""
    return _make(processing.StableDiffusionProcessingTxt2Img, scripts.scripts_txt2img, script_args, kwargs)


def img2img(script_args=None, **kwargs):
    return _make(processing.StableDiffusionProcessingImg2Img, scripts.scripts_img2img, script_args, kwargs)


def run(p):
    """``scripts.run`` first (selectable script), else ``process_images`` -- like the UI."""
    shared.state.begin(job="standin")
    try:
        processed = p.scripts.run(p, *p.script_args) if p.scripts is not None else None
        if processed is None:
            processed = processing.process_images(p)
        return processed
    finally:
        shared.state.end()
