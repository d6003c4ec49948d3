"""Stand-in for A1111 v1.10.1 ``modules/script_callbacks.py`` (written from the API, not the real code).

Same public surface as the real module for the callbacks an always-on script
uses: the parameter classes (``CFGDenoiserParams``, ``CFGDenoisedParams``,
``AfterCFGCallbackParams``, ``ExtraNoiseParams``, ``ImageSaveParams``, ...), the
``on_*`` registration functions (keyword-only ``name=``), the ``*_callback``
dispatchers the WebUI calls, ``callback_map``/``ordered_callbacks``,
``clear_callbacks``, ``remove_current_script_callbacks`` (by the *calling file*,
found from the stack) and ``remove_callbacks_for_function``.

Behaviour kept from the real file:
* each registration records the caller's filename (first stack frame outside
  this file) and a unique name ``"<extension or base>/<basename>/<category>[/<name>]"``;
* dispatchers swallow exceptions and report them through ``errors.report``;
* ``script_unloaded`` and ``before_ui`` callbacks run in *reverse* order;
* user ordering via ``opts.prioritized_callbacks_<category>`` is honoured.
Simplified: ``metadata.ini`` ordering instructions are not supported.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors, extensions, shared


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class ExtraNoiseParams:
    def __init__(self, noise, x, xi):
        self.noise = noise
        self.x = x
        self.xi = xi


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        """batched latent fed to the model: cond rows first, then one uncond row per image"""
        self.image_cond = image_cond
        self.sigma = sigma
        """per-row sigma (k-diffusion) or per-row integer timestep (timestep samplers)"""
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        """cond tensor, or for SDXL a dict with 'crossattn' and 'vector'"""
        self.text_uncond = text_uncond
        self.denoiser = denoiser
        """the CFGDenoiser instance"""


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


class ImageGridLoopParams:
    def __init__(self, imgs, cols, rows):
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    if filename is None:
        outside = [frame for frame in inspect.stack() if frame.filename != __file__]
        filename = outside[0].filename if outside else 'unknown file'

    ext = extensions.find_extension(filename)
    ext_name = ext.canonical_name if ext else 'base'

    base_name = f"{ext_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        base_name += f'/{name}'

    unique = base_name
    for i in range(1000):
        if not any(cb.name == unique for cb in callbacks):
            break
        unique = f'{base_name}-{i + 1}'

    callbacks.append(ScriptCallback(filename, fun, unique))


def sort_callbacks(category, unordered_callbacks, *, enable_user_sort=True):
    result = unordered_callbacks.copy()
    if enable_user_sort:
        for wanted in reversed(getattr(shared.opts, 'prioritized_callbacks_' + category, [])):
            idx = next((i for i, cb in enumerate(result) if cb.name == wanted), None)
            if idx is not None:
                result.insert(0, result.pop(idx))
    return result


def ordered_callbacks(category, unordered_callbacks=None, *, enable_user_sort=True):
    if unordered_callbacks is None:
        unordered_callbacks = callback_map.get('callbacks_' + category, [])

    if not enable_user_sort:
        return sort_callbacks(category, unordered_callbacks, enable_user_sort=False)

    cached = ordered_callbacks_map.get(category)
    if cached is not None and len(cached) == len(unordered_callbacks):
        return cached

    result = sort_callbacks(category, unordered_callbacks)
    ordered_callbacks_map[category] = result
    return result


def enumerate_callbacks():
    for category, callbacks in callback_map.items():
        if category.startswith('callbacks_'):
            category = category[len('callbacks_'):]
        yield category, callbacks


callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_tabs=[],
    callbacks_ui_train_tabs=[],
    callbacks_ui_settings=[],
    callbacks_before_image_saved=[],
    callbacks_image_saved=[],
    callbacks_extra_noise=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_image_grid=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_on_reload=[],
    callbacks_list_optimizers=[],
    callbacks_list_unets=[],
    callbacks_before_token_counter=[],
)

ordered_callbacks_map = {}


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()
    ordered_callbacks_map.clear()


def _run_each(category, job, *args, reverse=False, **kwargs):
    cbs = ordered_callbacks(category)
    for c in (reversed(cbs) if reverse else cbs):
        try:
            c.callback(*args, **kwargs)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo, app):
    _run_each('app_started', 'app_started_callback', demo, app)


def app_reload_callback():
    _run_each('on_reload', 'callbacks_on_reload')


def model_loaded_callback(sd_model):
    _run_each('model_loaded', 'model_loaded_callback', sd_model)


def ui_tabs_callback():
    res = []
    for c in ordered_callbacks('ui_tabs'):
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, 'ui_tabs_callback')
    return res


def ui_train_tabs_callback(params: UiTrainTabParams):
    _run_each('ui_train_tabs', 'callbacks_ui_train_tabs', params)


def ui_settings_callback():
    _run_each('ui_settings', 'ui_settings_callback')


def before_image_saved_callback(params: ImageSaveParams):
    _run_each('before_image_saved', 'before_image_saved_callback', params)


def image_saved_callback(params: ImageSaveParams):
    _run_each('image_saved', 'image_saved_callback', params)


def extra_noise_callback(params: ExtraNoiseParams):
    _run_each('extra_noise', 'callbacks_extra_noise', params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _run_each('cfg_denoiser', 'cfg_denoiser_callback', params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _run_each('cfg_denoised', 'cfg_denoised_callback', params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _run_each('cfg_after_cfg', 'cfg_after_cfg_callback', params)


def before_component_callback(component, **kwargs):
    _run_each('before_component', 'before_component_callback', component, **kwargs)


def after_component_callback(component, **kwargs):
    _run_each('after_component', 'after_component_callback', component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams):
    _run_each('image_grid', 'image_grid', params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]):
    _run_each('infotext_pasted', 'infotext_pasted', infotext, params)


def script_unloaded_callback():
    _run_each('script_unloaded', 'script_unloaded', reverse=True)


def before_ui_callback():
    _run_each('before_ui', 'before_ui', reverse=True)


def list_optimizers_callback():
    res = []
    _run_each('list_optimizers', 'list_optimizers', res)
    return res


def list_unets_callback():
    res = []
    _run_each('list_unets', 'list_unets', res)
    return res


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _run_each('before_token_counter', 'before_token_counter', params)


def remove_current_script_callbacks():
    outside = [frame for frame in inspect.stack() if frame.filename != __file__]
    filename = outside[0].filename if outside else 'unknown file'
    if filename == 'unknown file':
        return
    for callbacks in list(callback_map.values()) + list(ordered_callbacks_map.values()):
        for cb in [cb for cb in callbacks if cb.script == filename]:
            callbacks.remove(cb)


def remove_callbacks_for_function(callback_func):
    for callbacks in list(callback_map.values()) + list(ordered_callbacks_map.values()):
        for cb in [cb for cb in callbacks if cb.callback == callback_func]:
            callbacks.remove(cb)


def _register(category, callback, name):
    add_callback(callback_map['callbacks_' + category], callback, name=name, category=category)


def on_app_started(callback, *, name=None):
    _register('app_started', callback, name)


def on_before_reload(callback, *, name=None):
    _register('on_reload', callback, name)


def on_model_loaded(callback, *, name=None):
    _register('model_loaded', callback, name)


def on_ui_tabs(callback, *, name=None):
    _register('ui_tabs', callback, name)


def on_ui_train_tabs(callback, *, name=None):
    _register('ui_train_tabs', callback, name)


def on_ui_settings(callback, *, name=None):
    _register('ui_settings', callback, name)


def on_before_image_saved(callback, *, name=None):
    _register('before_image_saved', callback, name)


def on_image_saved(callback, *, name=None):
    _register('image_saved', callback, name)


def on_extra_noise(callback, *, name=None):
    _register('extra_noise', callback, name)


def on_cfg_denoiser(callback, *, name=None):
    _register('cfg_denoiser', callback, name)


def on_cfg_denoised(callback, *, name=None):
    _register('cfg_denoised', callback, name)


def on_cfg_after_cfg(callback, *, name=None):
    _register('cfg_after_cfg', callback, name)


def on_before_component(callback, *, name=None):
    _register('before_component', callback, name)


def on_after_component(callback, *, name=None):
    _register('after_component', callback, name)


def on_image_grid(callback, *, name=None):
    _register('image_grid', callback, name)


def on_infotext_pasted(callback, *, name=None):
    _register('infotext_pasted', callback, name)


def on_script_unloaded(callback, *, name=None):
    _register('script_unloaded', callback, name)


def on_before_ui(callback, *, name=None):
    _register('before_ui', callback, name)


def on_list_optimizers(callback, *, name=None):
    _register('list_optimizers', callback, name)


def on_list_unets(callback, *, name=None):
    _register('list_unets', callback, name)


def on_before_token_counter(callback, *, name=None):
    _register('before_token_counter', callback, name)
