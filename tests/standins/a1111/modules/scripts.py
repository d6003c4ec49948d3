"""Stand-in for A1111 v1.10.1 ``modules/scripts.py`` (written from the API, not the real code).

Mirrors, with the real names and call signatures:

* ``Script`` -- every class attribute (``name``, ``section``, ``filename``,
  ``args_from``/``args_to``, ``alwayson``, ``is_txt2img``/``is_img2img``, ``tabname``,
  ``group``, ``create_group``, ``infotext_fields``, ``paste_field_names``, ``api_info``,
  ``on_before_component_elem_id``/``on_after_component_elem_id``,
  ``setup_for_ui_only``, ``controls``) and every hook with its real argument order;
* ``AlwaysVisible``, ``MaskBlendArgs``, ``PostSampleArgs``, ``PostprocessImageArgs``,
  ``PostProcessMaskOverlayArgs``, ``PostprocessBatchListArgs``, ``OnComponent``;
* ``scripts_data`` of ``ScriptClassData(script_class, path, basedir, module)``,
  ``basedir()``, ``load_scripts()``, ``wrap_call``;
* ``ScriptRunner`` -- ``inputs`` starts as ``[None]``; ``create_script_ui`` sets
  ``args_from``, calls ``ui()``, builds ``api_info``, collects ``infotext_fields`` and
  ``paste_field_names``, appends the controls and sets ``args_to``; every hook
  runner passes ``p.script_args[args_from:args_to]`` positionally and swallows
  exceptions through ``errors.report``; hooks are only called on scripts whose
  class overrides them (``create_ordered_callbacks_list``), in load order unless
  ``opts.prioritized_callbacks_script_<method>`` reorders them.

Simplified:
* ``load_scripts(extension_dirs)`` loads the stand-in's own ``scripts/`` folder
  (i.e. ``xyz_grid.py``), then ``<dir>/scripts/*.py`` of each given extension
  directory, then ``modules/processing_scripts`` (refiner, sampler, seed -- the
  real built-in UI scripts; the "Comments" script is omitted), in that order; no
  ``metadata.ini`` dependency sorting, no ``scripts_postprocessing``, no
  ``extensions-builtin``.  ``args_from`` of an extension therefore differs from a
  real install; never hard-code it.
* ``initialize_scripts`` has no auto-postprocessing scripts.
"""
import inspect
import os
import re
import sys
from collections import namedtuple
from dataclasses import dataclass

import gradio as gr

from modules import errors, extensions, paths, script_callbacks, script_loading, shared

AlwaysVisible = object()


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostProcessMaskOverlayArgs:
    def __init__(self, index, mask_for_overlay, overlay_image):
        self.index = index
        self.mask_for_overlay = mask_for_overlay
        self.overlay_image = overlay_image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


@dataclass
class OnComponent:
    component: gr.blocks.Block


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False

    is_txt2img = False
    is_img2img = False
    tabname = None

    group = None
    create_group = True

    infotext_fields = None
    paste_field_names = None
    api_info = None

    on_before_component_elem_id = None
    on_after_component_elem_id = None

    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        same_on_both_tabs = self.show(True) == self.show(False)
        tab_prefix = (('img2img' if self.is_img2img else 'txt2img') + "_") if same_on_both_tabs else ""
        slug = re.sub(r'[^a-z_0-9]', '', re.sub(r'\s', '_', self.title().lower()))
        return f'script_{tab_prefix}{slug}_{item_id}'

    def before_hr(self, p, *args):
        pass


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True

    def elem_id(self, item_id):
        same_on_both_tabs = self.show(True) == self.show(False)
        tab_prefix = (('img2img' if self.is_img2img else 'txt2img') + "_") if same_on_both_tabs else ""
        return f'{tab_prefix}{item_id}'

    def show(self, is_img2img):
        return AlwaysVisible


current_basedir = paths.script_path


def basedir():
    """Base directory of the script being loaded: the extension's root for extension scripts."""
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])

scripts_data = []
postprocessing_scripts_data = []
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


def _script_files_in(base, *, only=None):
    folder = os.path.join(base, "scripts")
    if not os.path.isdir(folder):
        return []
    found = []
    for filename in sorted(os.listdir(folder)):
        path = os.path.join(folder, filename)
        if not os.path.isfile(path) or os.path.splitext(filename)[1].lower() != ".py":
            continue
        if only is not None and filename not in only:
            continue
        found.append(ScriptFile(base, filename, path))
    return found


def list_scripts(extension_dirs=(), *, builtin_scripts=("xyz_grid.py",), processing_scripts=True):
    """Root ``scripts/`` first (sorted), then every extension's ``scripts/`` (sorted),
    then ``modules/processing_scripts`` (sorted) -- the real loading order."""
    result = _script_files_in(paths.script_path, only=set(builtin_scripts) if builtin_scripts is not None else None)
    for ext_dir in extension_dirs:
        result += _script_files_in(os.path.abspath(ext_dir))
    if processing_scripts:
        folder = os.path.join(paths.script_path, "modules", "processing_scripts")
        for filename in sorted(os.listdir(folder)):
            if filename.endswith(".py") and not filename.startswith("_"):
                result.append(ScriptFile(paths.script_path, filename, os.path.join(folder, filename)))
    return result


def load_scripts(extension_dirs=(), *, builtin_scripts=("xyz_grid.py",), processing_scripts=True):
    """Load scripts like the WebUI at start-up / "Reload UI".

    Clears ``scripts_data`` and all registered callbacks, then executes each
    script file with ``script_loading.load_module`` while its base directory is
    prepended to ``sys.path`` and reported by ``basedir()``; every ``Script``
    subclass found in a module's namespace is appended to ``scripts_data``.
    Finally fresh ``scripts_txt2img``/``scripts_img2img`` runners are created.
    """
    global current_basedir, scripts_txt2img, scripts_img2img

    scripts_data.clear()
    postprocessing_scripts_data.clear()
    script_callbacks.clear_callbacks()

    for ext_dir in extension_dirs:
        ext_dir = os.path.abspath(ext_dir)
        if extensions.find_extension(os.path.join(ext_dir, "x")) is None:
            extensions.register(os.path.basename(ext_dir.rstrip(os.sep)), ext_dir)

    saved_path = sys.path

    for scriptfile in list_scripts(extension_dirs, builtin_scripts=builtin_scripts, processing_scripts=processing_scripts):
        try:
            if scriptfile.basedir != paths.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir

            module = script_loading.load_module(scriptfile.path)
            for obj in module.__dict__.values():
                if inspect.isclass(obj) and issubclass(obj, Script):
                    scripts_data.append(ScriptClassData(obj, scriptfile.path, scriptfile.basedir, module))
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            sys.path = saved_path
            current_basedir = paths.script_path

    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]

        self.callback_map = {}
        self.callback_names = [
            'before_process', 'process', 'before_process_batch', 'after_extra_networks_activate',
            'process_batch', 'postprocess', 'postprocess_batch', 'postprocess_batch_list', 'post_sample',
            'on_mask_blend', 'postprocess_image', 'postprocess_maskoverlay',
            'postprocess_image_after_composite', 'before_component', 'after_component',
        ]

        self.on_before_component_elem_id = {}
        self.on_after_component_elem_id = {}

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()

        for script_data in scripts_data:
            try:
                script = script_data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {script_data.module}: ", exc_info=True)
                continue

            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"

            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

        self.callback_map.clear()
        self.apply_on_before_component_callbacks()

    def apply_on_before_component_callbacks(self):
        for script in self.scripts:
            before = script.on_before_component_elem_id or []
            after = script.on_after_component_elem_id or []
            for elem_id, callback in before:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in after:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))
            before.clear()
            after.clear()

    def create_script_ui(self, script):
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        try:
            self.create_script_ui_inner(script)
        except Exception:
            errors.report(f"Error creating UI for {script.name}: ", exc_info=True)

    def create_script_ui_inner(self, script):
        import modules.api.models as api_models

        controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        script.controls = controls
        if controls is None:
            return

        script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()

        api_args = []
        for control in controls:
            control.custom_script_source = os.path.basename(script.filename)
            arg_info = api_models.ScriptArg(label=control.label or "")
            for field in ("value", "minimum", "maximum", "step"):
                v = getattr(control, field, None)
                if v is not None:
                    setattr(arg_info, field, v)
            choices = getattr(control, 'choices', None)
            if choices is not None:
                arg_info.choices = [x[0] if isinstance(x, tuple) else x for x in choices]
            api_args.append(arg_info)

        script.api_info = api_models.ScriptInfo(
            name=script.name,
            is_img2img=script.is_img2img,
            is_alwayson=script.alwayson,
            args=api_args,
        )

        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names

        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui_for_section(self, section, scriptlist=None):
        if scriptlist is None:
            scriptlist = self.alwayson_scripts

        for script in scriptlist:
            if script.alwayson and script.section != section:
                continue
            if script.create_group:
                with gr.Group(visible=script.alwayson) as group:
                    self.create_script_ui(script)
                script.group = group
            else:
                self.create_script_ui(script)

    def prepare_ui(self):
        self.inputs = [None]

    def setup_ui(self):
        all_titles = [wrap_call(s.title, s.filename, "title") or s.filename for s in self.scripts]
        self.title_map = {title.lower(): s for title, s in zip(all_titles, self.scripts)}
        self.titles = [wrap_call(s.title, s.filename, "title") or f"{s.filename} [error]" for s in self.selectable_scripts]

        self.setup_ui_for_section(None)

        dropdown = gr.Dropdown(label="Script", elem_id="script_list", choices=["None"] + self.titles, value="None", type="index")
        self.inputs[0] = dropdown

        self.setup_ui_for_section(None, self.selectable_scripts)

        def select_script(script_index):
            if script_index is None:
                script_index = 0
            selected = self.selectable_scripts[script_index - 1] if script_index > 0 else None
            return [gr.update(visible=selected == s) for s in self.selectable_scripts]

        dropdown.change(fn=select_script, inputs=[dropdown], outputs=[s.group for s in self.selectable_scripts])

        self.script_load_ctr = 0

        def onload_script_visibility(params):
            title = params.get('Script', None)
            if title:
                try:
                    title_index = self.titles.index(title)
                    visible = title_index == self.script_load_ctr
                    self.script_load_ctr = (self.script_load_ctr + 1) % len(self.titles)
                    return gr.update(visible=visible)
                except ValueError:
                    params['Script'] = None
                    print(f'Cannot find Script: "{title}"')
            return gr.update(visible=False)

        self.infotext_fields.append((dropdown, lambda x: gr.update(value=x.get('Script', 'None'))))
        self.infotext_fields.extend([(s.group, onload_script_visibility) for s in self.selectable_scripts])

        self.apply_on_before_component_callbacks()
        return self.inputs

    def run(self, p, *args):
        script_index = args[0]
        if script_index == 0 or script_index is None:
            return None
        script = self.selectable_scripts[script_index - 1]
        if script is None:
            return None
        processed = script.run(p, *args[script.args_from:script.args_to])
        shared.total_tqdm.clear()
        return processed

    def list_scripts_for_method(self, method_name):
        if method_name in ('before_component', 'after_component'):
            return self.scripts
        return self.alwayson_scripts

    def create_ordered_callbacks_list(self, method_name, *, enable_user_sort=True):
        category = f'script_{method_name}'
        callbacks = []
        for script in self.list_scripts_for_method(method_name):
            if getattr(script.__class__, method_name, None) == getattr(Script, method_name, None):
                continue
            script_callbacks.add_callback(callbacks, script, category=category, name=script.__class__.__name__, filename=script.filename)
        return script_callbacks.sort_callbacks(category, callbacks, enable_user_sort=enable_user_sort)

    def ordered_callbacks(self, method_name, *, enable_user_sort=True):
        script_list = self.list_scripts_for_method(method_name)
        category = f'script_{method_name}'
        count, callbacks = self.callback_map.get(category, (-1, None))
        if callbacks is None or count != len(script_list):
            callbacks = self.create_ordered_callbacks_list(method_name, enable_user_sort=enable_user_sort)
            self.callback_map[category] = len(script_list), callbacks
        return callbacks

    def ordered_scripts(self, method_name):
        return [x.callback for x in self.ordered_callbacks(method_name)]

    def _call_each(self, method_name, p, *leading, label=None, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method_name)(p, *leading, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {label or method_name}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._call_each('before_process', p)

    def process(self, p):
        self._call_each('process', p)

    def process_before_every_sampling(self, p, **kwargs):
        self._call_each('process_before_every_sampling', p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._call_each('before_process_batch', p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._call_each('after_extra_networks_activate', p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call_each('process_batch', p, **kwargs)

    def postprocess(self, p, processed):
        self._call_each('postprocess', p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        self._call_each('postprocess_batch', p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs):
        self._call_each('postprocess_batch_list', p, pp, **kwargs)

    def post_sample(self, p, ps: PostSampleArgs):
        self._call_each('post_sample', p, ps)

    def on_mask_blend(self, p, mba: MaskBlendArgs):
        self._call_each('on_mask_blend', p, mba, label='post_sample')

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._call_each('postprocess_image', p, pp)

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs):
        self._call_each('postprocess_maskoverlay', p, ppmo, label='postprocess_image')

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs):
        self._call_each('postprocess_image_after_composite', p, pp)

    def before_hr(self, p):
        self._call_each('before_hr', p)

    def before_component(self, component, **kwargs):
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                errors.report(f"Error running on_before_component: {script.filename}", exc_info=True)
        for script in self.ordered_scripts('before_component'):
            try:
                script.before_component(component, **kwargs)
            except Exception:
                errors.report(f"Error running before_component: {script.filename}", exc_info=True)

    def after_component(self, component, **kwargs):
        for callback, script in self.on_after_component_elem_id.get(component.elem_id, []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                errors.report(f"Error running on_after_component: {script.filename}", exc_info=True)
        for script in self.ordered_scripts('after_component'):
            try:
                script.after_component(component, **kwargs)
            except Exception:
                errors.report(f"Error running after_component: {script.filename}", exc_info=True)

    def script(self, title):
        return self.title_map.get(title.lower())

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.ordered_scripts('setup'):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from:script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def set_named_arg(self, args, script_name, arg_elem_id, value, fuzzy=False):
        script = next((x for x in self.scripts if x.name == script_name), None)
        if script is None:
            raise RuntimeError(f"script {script_name} not found")
        for i, control in enumerate(script.controls):
            matched = (arg_elem_id in control.elem_id) if fuzzy else (arg_elem_id == control.elem_id)
            if matched:
                index = script.args_from + i
                if isinstance(args, tuple):
                    return args[:index] + (value,) + args[index + 1:]
                if isinstance(args, list):
                    args[index] = value
                    return args
                raise RuntimeError(f"args is not a list or tuple, but {type(args)}")
        raise RuntimeError(f"arg_elem_id {arg_elem_id} not found in script {script_name}")


scripts_txt2img: ScriptRunner = None
scripts_img2img: ScriptRunner = None
scripts_postproc = None
scripts_current: ScriptRunner = None

reload_scripts = load_scripts
