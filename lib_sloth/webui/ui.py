"""The Sloth accordion (gradio): one enable toggle, presets, and a section per method.

`build` only creates components and wires their own events; it registers no WebUI callback,
patches nothing and writes no file (the API calls ``ui()`` again just to read the defaults).
Every range, default and label comes from the settings table; slider steps are derived from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from .. import infotext, user_presets
from ..fields import SettingsError
from ..presets import PRESETS, preset
from ..settings import iter_fields, settings_from_dict, to_flat
from . import args as script_args
from .labels import EXTENSION, item_id, label, section_title, sections

AUTO = object()


@dataclass
class BuiltUI:
    controls: list  # the Script's positional args, in args.arg_names() order (pinned; the sections show them grouped)
    infotext_fields: list  # (component, infotext.PasteKey)
    paste_field_names: list[str]
    components: dict[str, Any]  # "enabled", "preset" and every setting path -> its control
    extras: dict[str, Any] = field(default_factory=dict)  # preset name box, buttons, status


def input_accordion_class():
    """``modules.ui_components.InputAccordion`` (A1111 1.7+, Forge), or None."""
    try:
        from modules.ui_components import InputAccordion
    except Exception:
        return None
    return InputAccordion


def build(*, elem_id: Callable[[str], str], presets_path: str, backend_note: str = "",
          accordion_cls=AUTO) -> BuiltUI:
    """Create the accordion inside the current gr.Blocks and return its controls."""
    accordion_cls = input_accordion_class() if accordion_cls is AUTO else accordion_cls
    specs = list(iter_fields())
    users, presets_message = _load_user_presets(presets_path)
    components: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    preset_values = [to_flat(preset(name)) for name in PRESETS]  # slider steps must reach them

    if accordion_cls is not None:
        outer = enabled = accordion_cls(False, label=EXTENSION, elem_id=elem_id("enabled"))
    else:
        outer = gr.Accordion(EXTENSION, open=False, elem_id=elem_id("accordion"))
    with outer:
        if accordion_cls is None:
            enabled = gr.Checkbox(False, label=f"Enable {EXTENSION}", elem_id=elem_id("enabled"))
        components["enabled"] = enabled
        if backend_note:
            extras["note"] = gr.Markdown(f"**{backend_note}**", elem_id=elem_id("note"))
        with gr.Row():
            components["preset"] = gr.Dropdown(choices=_preset_names(users), value=None, label="Preset",
                                               elem_id=elem_id("preset"))
            extras["preset_name"] = gr.Textbox(label="Preset name", max_lines=1, elem_id=elem_id("preset_name"))
        with gr.Row():
            extras["preset_save"] = gr.Button("Save preset", elem_id=elem_id("preset_save"))
            extras["preset_delete"] = gr.Button("Delete preset", elem_id=elem_id("preset_delete"))
        extras["status"] = gr.Markdown(presets_message, elem_id=elem_id("status"))
        for block in sections():
            with gr.Accordion(section_title(block), open=False):
                _controls(components, [s for s in specs if s.path.startswith(block + ".")], elem_id, preset_values)
        _controls(components, [s for s in specs if "." not in s.path], elem_id, preset_values)
        # filled only by the API's infotext field: what was wrong in it (see lib_sloth.webui.args)
        components["paste_problems"] = gr.Textbox("", visible=False, elem_id=elem_id("paste_problems"))

    for extra in extras.values():  # not settings: nothing to save in ui-config.json (nor to collide there)
        extra.do_not_save_to_config = True

    leaf_controls = [components[s.path] for s in specs]
    _wire_presets(components, extras, leaf_controls, specs, presets_path)
    _wire_exclusive_enables(components)

    keys = infotext.paste_keys()
    return BuiltUI(
        controls=[components[name] for name in script_args.arg_names()],
        infotext_fields=[*((components[name], keys[name]) for name in keys),
                         (components["paste_problems"], infotext.problems_paste_key()),
                         (extras["status"], infotext.status_paste_key()),
                         (components["preset"], _clear_preset)],
        paste_field_names=[str(k) for k in keys.values()],
        components=components,
        extras=extras,
    )


def _controls(components: dict, specs: list, elem_id, preset_values: list[dict]) -> None:
    """One control per setting, two to a row, a new row for each group (input / output ...)."""
    rows: list[list] = []
    for spec in specs:
        group = spec.path.rsplit(".", 1)[0]
        if not rows or len(rows[-1]) == 2 or rows[-1][0].path.rsplit(".", 1)[0] != group:
            rows.append([])
        rows[-1].append(spec)
    for row in rows:
        with gr.Row():
            for spec in row:
                components[spec.path] = make_control(spec, elem_id(item_id(spec.path)), preset_values)


def make_control(spec, elem_id: str, preset_values: list[dict] = ()):
    text = label(spec.path)
    if spec.kind == "bool":
        return gr.Checkbox(value=spec.default, label=text, elem_id=elem_id)
    if spec.kind == "choice":
        return gr.Radio(choices=[str(c) for c in spec.choices], value=str(spec.default), label=text, elem_id=elem_id)
    step = slider_step(spec, [values[spec.path] for values in preset_values])
    return gr.Slider(minimum=spec.lo, maximum=spec.hi, step=step, value=spec.default, label=text, elem_id=elem_id)


def slider_step(spec, also_on_grid=()) -> float:
    """1 for whole numbers; else the coarsest 1, 2 or 5 x 10^k (2.5 x 10^k when that is what it
    takes) giving at least 100 steps, on which the maximum, the default and `also_on_grid` (the
    presets' values) lie, so a slider can show every value the table and the presets use."""
    if spec.integer:
        return 1
    must = [spec.hi, spec.default, *also_on_grid]
    exponent = math.floor(math.log10((spec.hi - spec.lo) / 100))
    for k in range(exponent, exponent - 8, -1):
        for m in (5, 2, 2.5, 1):
            step = m * 10.0 ** k
            if step > (spec.hi - spec.lo) / 100 + 1e-12:
                continue
            if all(_on_grid(v - spec.lo, step) for v in must):
                return float(f"{step:.10g}")
    return (spec.hi - spec.lo) / 1000


def _on_grid(offset: float, step: float) -> bool:
    n = offset / step
    return abs(n - round(n)) < 1e-6


def _load_user_presets(presets_path):
    """user_presets.load, but never an exception: a hostile file must not take the accordion away."""
    try:
        return user_presets.load(presets_path)
    except Exception as err:  # load reports every known problem itself; this is the last line
        return {}, (f"Sloth: could not read user presets from {user_presets.shown(presets_path)} "
                    f"({type(err).__name__}); they are ignored.")


def _clear_preset(params):
    """Paste target of the preset dropdown: after a paste the controls no longer show a preset."""
    return gr.update(value=None)


def _preset_names(users) -> list[str]:
    return [*PRESETS, *(name for name in users if name not in PRESETS)]


def _wire_presets(components, extras, leaf_controls, specs, presets_path) -> None:
    dropdown, status = components["preset"], extras["status"]

    def choose(name):
        users, message = _load_user_presets(presets_path)
        try:
            settings = script_args.find_preset(name, lambda: users) if name else None
        except SettingsError as err:
            settings, message = None, f"Sloth: {err}"
        if settings is None:
            return [gr.update() for _ in leaf_controls] + [gr.update(), gr.update(value=message)]
        flat = to_flat(settings)
        # a preset that does something switches Sloth on; "off" switches it off
        return ([gr.update(value=script_args.ui_value(s, flat[s.path])) for s in specs]
                + [gr.update(value=settings.active), gr.update(value=message)])

    def save(name, *values):
        try:
            settings = settings_from_dict({s.path: v for s, v in zip(specs, values)})
        except SettingsError as err:
            return gr.update(), gr.update(value=f"Sloth: not saved: {err}")
        users, message = user_presets.save(presets_path, name if isinstance(name, str) else "", settings)
        saved = isinstance(name, str) and name.strip() in users
        return (gr.update(choices=_preset_names(users), value=name.strip() if saved else None),
                gr.update(value=message))

    def delete(name, selected):
        target = (name or "").strip() or (selected or "")
        users, message = user_presets.delete(presets_path, target)
        return gr.update(choices=_preset_names(users), value=None), gr.update(value=message)

    # .input fires only for the user's own choice, never when a paste sets the dropdown
    dropdown.input(fn=choose, inputs=[dropdown], outputs=[*leaf_controls, components["enabled"], status],
                   show_progress=False)
    extras["preset_save"].click(fn=save, inputs=[extras["preset_name"], *leaf_controls], outputs=[dropdown, status],
                                show_progress=False)
    extras["preset_delete"].click(fn=delete, inputs=[extras["preset_name"], dropdown], outputs=[dropdown, status],
                                  show_progress=False)


def _wire_exclusive_enables(components) -> None:
    """Switching a method on switches off the methods the method table refuses alongside it."""
    for path in script_args.method_enable_paths():
        rivals = [components[p] for p in script_args.conflicting_enables(path)]
        if not rivals:
            continue

        def switch(on, n=len(rivals)):
            return [gr.update(value=False) if on else gr.update() for _ in range(n)]

        components[path].input(fn=switch, inputs=[components[path]], outputs=rivals, show_progress=False)
