"""Stand-in for the script-argument logic of A1111 v1.10.1 ``modules/api/api.py``
(written from the API, not the real code).  No FastAPI app is built.

* ``script_name_to_index(name, scripts)``: case-insensitive match against
  ``script.title()``, HTTP 422 when missing;
* ``Api()``: as v1.10.1's ``__init__``, builds the UI (``modules.ui.create_ui``) when the
  runners have no scripts yet (``--nowebui``), then reads both runners' defaults;
* ``Api.init_default_script_args(runner)``: ``[None] * max(args_to)`` with slot 0 = 0,
  then, inside ``gr.Blocks()``, ``script.ui(script.is_img2img)`` is called once to test
  truthiness and **again** to read every component's ``.value`` into
  ``[args_from:args_to]`` (so ``ui()`` runs twice more per script when the API starts);
* ``Api.init_script_args(request, default_script_args, selectable_scripts,
  selectable_idx, script_runner, *, input_script_args=None)``: copy of the defaults,
  infotext-derived indexes applied, selectable script args, then for each
  ``alwayson_scripts`` entry (matched by lower-cased title against
  ``script_runner.scripts``; a selectable script -> 422) the ``"args"`` list is copied
  positionally up to ``args_to - args_from``;
* ``Api.apply_infotext(request, tabname, *, script_runner=None,
  mentioned_script_args=None)``: paste fields with an ``api`` name fill unset request
  fields; paste fields whose component is in ``script_runner.inputs`` map to
  ``script_args`` indexes, coerced with ``type(component.value)``.

``request`` can be any object with the used attributes (``script_args``,
``alwayson_scripts``, ``infotext``, ``override_settings``...); ``SimpleRequest`` is a
convenience.  ``run_txt2img_api(api, **request_fields)`` mirrors the tail of
``text2imgapi`` (alwayson scripts only).
"""
from types import SimpleNamespace

import gradio as gr
from fastapi.exceptions import HTTPException

from modules import infotext_utils, scripts, ui


def script_name_to_index(name, scripts_list):
    try:
        return [script.title().lower() for script in scripts_list].index(name.lower())
    except Exception as e:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found") from e


class SimpleRequest(SimpleNamespace):
    def __init__(self, **kwargs):
        kwargs.setdefault("script_name", None)
        kwargs.setdefault("script_args", [])
        kwargs.setdefault("alwayson_scripts", {})
        kwargs.setdefault("infotext", None)
        kwargs.setdefault("override_settings", None)
        super().__init__(**kwargs)
        self._set_fields = set(kwargs)

    def dict(self, exclude_unset=False):
        d = {k: v for k, v in vars(self).items() if not k.startswith('_')}
        if exclude_unset:
            d = {k: v for k, v in d.items() if k in self._set_fields}
        return d

    @property
    def __fields__(self):
        return {}


class Api:
    def __init__(self):
        # v1.10.1 Api.__init__ (after the routes): build the UI if no tab has been built yet --
        # which is the case with --nowebui, where webui.api_only runs before_ui_callback() only
        # after create_api -- then read both runners' default script args.
        self.default_script_arg_txt2img = []
        self.default_script_arg_img2img = []
        txt2img_runner, img2img_runner = scripts.scripts_txt2img, scripts.scripts_img2img
        if not txt2img_runner.scripts or not img2img_runner.scripts:
            ui.create_ui()
        if not txt2img_runner.scripts:
            txt2img_runner.initialize_scripts(False)
        self.default_script_arg_txt2img = self.init_default_script_args(txt2img_runner)
        if not img2img_runner.scripts:
            img2img_runner.initialize_scripts(True)
        self.default_script_arg_img2img = self.init_default_script_args(img2img_runner)

    def get_selectable_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None, None
        idx = script_name_to_index(script_name, script_runner.selectable_scripts)
        return script_runner.selectable_scripts[idx], idx

    def get_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None, None
        return script_runner.scripts[script_name_to_index(script_name, script_runner.scripts)]

    def init_default_script_args(self, script_runner):
        last_arg_index = 1
        for script in script_runner.scripts:
            if last_arg_index < script.args_to:
                last_arg_index = script.args_to
        script_args = [None] * last_arg_index
        script_args[0] = 0

        with gr.Blocks():
            for script in script_runner.scripts:
                if script.ui(script.is_img2img):
                    defaults = [elem.value for elem in script.ui(script.is_img2img)]
                    script_args[script.args_from:script.args_to] = defaults
        return script_args

    def init_script_args(self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, *, input_script_args=None):
        script_args = default_script_args.copy()

        if input_script_args is not None:
            for index, value in input_script_args.items():
                script_args[index] = value

        if selectable_scripts:
            script_args[selectable_scripts.args_from:selectable_scripts.args_to] = request.script_args
            script_args[0] = selectable_idx + 1

        if request.alwayson_scripts:
            for name in request.alwayson_scripts.keys():
                script = self.get_script(name, script_runner)
                if script is None:
                    raise HTTPException(status_code=422, detail=f"always on script {name} not found")
                if script.alwayson is False:
                    raise HTTPException(status_code=422, detail="Cannot have a selectable script in the always on scripts params")
                if "args" in request.alwayson_scripts[name]:
                    given = request.alwayson_scripts[name]["args"]
                    for idx in range(0, min(script.args_to - script.args_from, len(given))):
                        script_args[script.args_from + idx] = given[idx]
        return script_args

    def apply_infotext(self, request, tabname, *, script_runner=None, mentioned_script_args=None):
        if not request.infotext:
            return {}

        possible_fields = infotext_utils.paste_fields[tabname]["fields"]
        set_fields = request.dict(exclude_unset=True)
        params = infotext_utils.parse_generation_parameters(request.infotext)

        def get_field_value(field, params):
            value = field.function(params) if field.function else params.get(field.label)
            if value is None:
                return None
            if field.api in request.__fields__:
                target_type = request.__fields__[field.api].type_
            else:
                target_type = type(field.component.value)
            if target_type == type(None):
                return None
            if isinstance(value, dict) and value.get('__type__') == 'generic_update':
                value = value.get('value')
            if value is not None and not isinstance(value, target_type):
                value = target_type(value)
            return value

        for field in possible_fields:
            if not field.api or field.api in set_fields:
                continue
            value = get_field_value(field, params)
            if value is not None:
                setattr(request, field.api, value)

        if request.override_settings is None:
            request.override_settings = {}
        for _, setting_name, value in infotext_utils.get_override_settings(params):
            if setting_name not in request.override_settings:
                request.override_settings[setting_name] = value

        if script_runner is not None and mentioned_script_args is not None:
            indexes = {v: i for i, v in enumerate(script_runner.inputs)}
            for field in possible_fields:
                if field.component in indexes:
                    value = get_field_value(field, params)
                    if value is None:
                        continue
                    mentioned_script_args[indexes[field.component]] = value

        return params


def run_txt2img_api(api, request, **p_kwargs):
    """Tail of ``Api.text2imgapi`` for a request without a selectable script:
    build ``script_args`` and run ``process_images`` with ``p.is_api = True``."""
    from modules import processing, shared

    runner = scripts.scripts_txt2img
    infotext_script_args = {}
    api.apply_infotext(request, "txt2img", script_runner=runner, mentioned_script_args=infotext_script_args) if "txt2img" in infotext_utils.paste_fields else None
    if not api.default_script_arg_txt2img:
        api.default_script_arg_txt2img = api.init_default_script_args(runner)
    script_args = api.init_script_args(request, api.default_script_arg_txt2img, None, None, runner, input_script_args=infotext_script_args)

    p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, **p_kwargs)
    p.is_api = True
    p.scripts = runner
    try:
        shared.state.begin(job="scripts_txt2img")
        p.script_args = tuple(script_args)
        return processing.process_images(p)
    finally:
        shared.state.end()
