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
with ``api=True`` -- ``Api()`` (its ``__init__`` runs ``init_default_script_args`` for both
runners). ``start_api_only`` mirrors ``webui.api_only`` (``--nowebui``) instead: ``Api()`` first,
which builds the UI because the runners are still empty, then ``before_ui_callback``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gradio as gr  # noqa: E402
import torch  # noqa: E402

import k_diffusion.sampling  # noqa: E402
from modules import errors, extensions, infotext_utils, patches, processing, script_callbacks, scripts, shared, ui  # noqa: E402
from modules.api import api as api_module  # noqa: E402

SECTION_ORDER = ui.SECTION_ORDER

api = None
"""The ``Api`` instance created by ``start_ui(api=True)``."""

tab_components = ui.tab_components
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


def start_ui(*, api_enabled=True):
    """Start like ``webui.py`` with the full UI: ``before_ui_callback``, ``ui.create_ui()`` (both
    tabs), ``ui_settings_callback``, then -- with ``api=True`` (``--api``) -- ``Api()``, whose
    ``__init__`` reads the default script args of both runners."""
    global api
    script_callbacks.before_ui_callback()
    ui.create_ui()
    script_callbacks.ui_settings_callback()
    if api_enabled:
        api = api_module.Api()


def start_api_only():
    """Start like ``webui.api_only`` (``--nowebui``): ``create_api`` -> ``Api()``, which builds the
    UI itself because the runners have no scripts yet, and only then ``before_ui_callback`` and
    ``app_started_callback(None, app)``."""
    global api
    api = api_module.Api()
    script_callbacks.before_ui_callback()
    script_callbacks.app_started_callback(None, None)


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
