"""Stand-in for A1111 v1.10.1 ``modules/infotext_utils.py`` (written from the API, not the real code).

Also registered as ``modules.generation_parameters_copypaste`` in ``sys.modules``, as
the real module does for old extensions.

Kept exactly:
* ``re_param`` (keys are ``\\w[\\w \\-/]+``; a value is a JSON-quoted string or runs to
  the next comma), ``re_imagesize`` (``WxH`` values become ``key-1``/``key-2``),
  ``quote``/``unquote``;
* ``parse_generation_parameters(x, skip_fields=None)``: prompt / ``Negative prompt:``
  lines, the last line parsed as parameters only when it has at least three
  ``key: value`` pairs, the same default keys filled in (``Clip skip``, ``Hires ...``,
  ``Schedule type``, ``RNG``, ``VAE Encoder``...), ``infotext_versions.backcompat``,
  then ``opts.infotext_skip_pasting`` keys removed;
* ``PasteField(component, target, *, api=None)``, ``paste_fields``, ``add_paste_fields``,
  ``register_paste_params_button``, ``ParamBinding``, ``get_override_settings``,
  ``create_override_settings_dict``;
* ``connect_paste``'s ``paste_func``: ``infotext_pasted_callback(infotext, params)``
  runs first; for each ``(component, key)``: a callable key gets ``params`` (an
  exception counts as ``None``), else ``params.get(key)``; ``None`` -> ``gr.update()``
  (component unchanged); a dict (``gr.update`` in gradio 3) is passed through;
  otherwise the value is coerced with ``type(component.value)``: ``bool`` turns
  ``"False"`` into ``False`` (any other non-empty string is ``True``), ``int`` goes
  through ``float(v)`` (yes, the result is a float), failures give ``gr.update()``.
  ``apply_paste(infotext, fields)`` runs that logic without a button.

Simplified: no image paste/send buttons, style extraction uses the style-less
``shared.prompt_styles`` stub, no ``params.txt`` fallback for an empty paste.
"""
from __future__ import annotations

import json
import re
import sys

import gradio as gr

from modules import errors, infotext_versions, prompt_parser, script_callbacks, shared

sys.modules['modules.generation_parameters_copypaste'] = sys.modules[__name__]

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
re_hypernet_hash = re.compile(r"\(([0-9a-f]+)\)$")
type_of_gr_update = type(gr.update())


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None, source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def quote(text):
    s = str(text)
    if ',' not in s and '\n' not in s and ':' not in s:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])

    paste_fields[tabname] = {"init_img": init_img, "fields": fields, "override_settings_component": override_settings_component}

    import modules.ui
    if tabname == 'txt2img':
        modules.ui.txt2img_paste_fields = fields
    elif tabname == 'img2img':
        modules.ui.img2img_paste_fields = fields


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


def restore_old_hires_fix_params(res):
    firstpass_width = res.get('First pass size-1', None)
    firstpass_height = res.get('First pass size-2', None)

    if shared.opts.use_old_hires_fix_width_height:
        hires_width = int(res.get("Hires resize-1", 0))
        hires_height = int(res.get("Hires resize-2", 0))
        if hires_width and hires_height:
            res['Size-1'] = hires_width
            res['Size-2'] = hires_height
            return

    if firstpass_width is None or firstpass_height is None:
        return

    from modules import processing

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if firstpass_width == 0 or firstpass_height == 0:
        firstpass_width, firstpass_height = processing.old_hires_fix_first_pass_dimensions(width, height)

    res['Size-1'] = firstpass_width
    res['Size-2'] = firstpass_height
    res['Hires resize-1'] = width
    res['Hires resize-2'] = height


_defaults_when_missing = [
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", 'original'),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
]

_defaults_after_hires_fix = [
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
]


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    if skip_fields is None:
        skip_fields = shared.opts.infotext_skip_pasting

    res = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ''

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f"Error parsing \"{k}: {v}\"")

    if shared.opts.infotext_styles != "Ignore":
        found_styles, prompt_no_styles, negative_prompt_no_styles = shared.prompt_styles.extract_styles_from_prompt(prompt, negative_prompt)
        same_hr_styles = True
        if "Hires prompt" in res or "Hires negative prompt" in res:
            infotext_ver = infotext_versions.parse_version(res.get("Version"))
            if infotext_ver is None or infotext_ver > infotext_versions.v180_hr_styles:
                hr_prompt, hr_negative_prompt = res.get("Hires prompt", prompt), res.get("Hires negative prompt", negative_prompt)
                hr_found, hr_prompt_ns, hr_negative_ns = shared.prompt_styles.extract_styles_from_prompt(hr_prompt, hr_negative_prompt)
                same_hr_styles = found_styles == hr_found
                if same_hr_styles:
                    res["Hires prompt"] = '' if hr_prompt_ns == prompt_no_styles else hr_prompt_ns
                    res['Hires negative prompt'] = '' if hr_negative_ns == negative_prompt_no_styles else hr_negative_ns
        if same_hr_styles:
            prompt, negative_prompt = prompt_no_styles, negative_prompt_no_styles
            if (shared.opts.infotext_styles == "Apply if any" and found_styles) or shared.opts.infotext_styles == "Apply":
                res['Styles array'] = found_styles

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    if "Clip skip" not in res:
        res["Clip skip"] = "1"

    hypernet = res.get("Hypernet", None)
    if hypernet is not None:
        res["Prompt"] += f"""<hypernet:{hypernet}:{res.get("Hypernet strength", "1.0")}>"""

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0

    for key, value in _defaults_when_missing:
        if key not in res:
            res[key] = value

    restore_old_hires_fix_params(res)

    for key, value in _defaults_after_hires_fix:
        if key not in res:
            res[key] = value

    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    attention = prompt_parser.parse_prompt_attention(prompt) + prompt_parser.parse_prompt_attention(negative_prompt)
    uses_emphasis = len(attention) != len([a for a in attention if a[1] == 1.0 or a[0] == 'BREAK'])
    if "Emphasis" not in res and uses_emphasis:
        res["Emphasis"] = "Original"

    if "Refiner switch by sampling steps" not in res:
        res["Refiner switch by sampling steps"] = False

    infotext_versions.backcompat(res)

    for key in skip_fields:
        res.pop(key, None)

    return res


infotext_to_setting_name_mapping = []


def create_override_settings_dict(text_pairs):
    res = {}
    params = {}
    for pair in text_pairs:
        k, v = pair.split(":", maxsplit=1)
        params[k] = v.strip()

    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        value = params.get(param_name, None)
        if value is None:
            continue
        res[setting_name] = shared.opts.cast_value(setting_name, value)
    return res


def get_override_settings(params, *, skip_fields=None):
    res = []
    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        if param_name in (skip_fields or {}):
            continue
        v = params.get(param_name, None)
        if v is None:
            continue
        if setting_name == "sd_model_checkpoint" and shared.opts.disable_weights_auto_swap:
            continue
        v = shared.opts.cast_value(setting_name, v)
        if v == getattr(shared.opts, setting_name, None):
            continue
        res.append((param_name, setting_name, v))
    return res


def _value_for(output, key, params):
    if callable(key):
        try:
            v = key(params)
        except Exception:
            errors.report(f"Error executing {key}", exc_info=True)
            v = None
    else:
        v = params.get(key, None)

    if v is None:
        return gr.update()
    if isinstance(v, type_of_gr_update):
        return v
    try:
        valtype = type(output.value)
        if valtype == bool and v == "False":
            val = False
        elif valtype == int:
            val = float(v)
        else:
            val = valtype(v)
        return gr.update(value=val)
    except Exception:
        return gr.update()


def make_paste_func(paste_fields, override_settings_component=None):
    """Return ``(paste_func, fields)`` as ``connect_paste`` builds them."""

    def paste_func(prompt):
        params = parse_generation_parameters(prompt)
        script_callbacks.infotext_pasted_callback(prompt, params)
        return [_value_for(output, key, params) for output, key in paste_fields]

    if override_settings_component is not None:
        already_handled_fields = {key: 1 for _, key in paste_fields}

        def paste_settings(params):
            vals = get_override_settings(params, skip_fields=already_handled_fields)
            pairs = [f"{infotext_text}: {value}" for infotext_text, setting_name, value in vals]
            return gr.update(value=pairs, choices=pairs, visible=bool(pairs))  # gr.Dropdown.update in 3.41

        paste_fields = paste_fields + [(override_settings_component, paste_settings)]

    return paste_func, paste_fields


def connect_paste(button, paste_fields, input_comp, override_settings_component, tabname):
    paste_func, fields = make_paste_func(paste_fields, override_settings_component)
    button.click(fn=paste_func, inputs=[input_comp], outputs=[x[0] for x in fields], show_progress=False)


def apply_paste(infotext, fields):
    """Run the paste logic on ``infotext`` for ``fields`` (``[(component, key), ...]``);
    returns one ``gr.update(...)`` dict per field, in order."""
    paste_func, _ = make_paste_func(list(fields))
    return paste_func(infotext)
