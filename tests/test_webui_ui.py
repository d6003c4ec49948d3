"""The Sloth accordion, built with the real gradio 3.41.2 in gr.Blocks (no browser).

Every control comes from the settings table; presets and pasted info text update every control;
the hover hints in javascript/ match the table and every control's elem_id.
"""
import os
import sys

import gradio as gr
import pytest
from hypothesis import given, settings as hsettings

from lib_sloth import infotext, user_presets
from lib_sloth.presets import PRESETS, preset
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict, to_flat
from lib_sloth.webui import args as script_args
from lib_sloth.webui import hints, labels, ui
from settings_strategies import pasted_subset, random_settings

STANDIN_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

from modules import infotext_utils  # noqa: E402  (stand-ins of the WebUI's modules)
from modules.ui_components import InputAccordion  # noqa: E402

PREFIX = "script_txt2img_sloth_"
SPECS = list(iter_fields())


def build(presets_path, **kwargs):
    with gr.Blocks() as blocks:
        built = ui.build(elem_id=lambda item: PREFIX + item, presets_path=str(presets_path), **kwargs)
    return blocks, built


@pytest.fixture
def presets_path(tmp_path):
    return str(tmp_path / "user_presets.json")


@pytest.fixture
def built(presets_path):
    return build(presets_path, accordion_cls=InputAccordion)


@pytest.fixture(scope="module")
def paste_ui(tmp_path_factory):
    """One UI for the paste tests: pasting only computes updates, it changes no component."""
    return build(tmp_path_factory.mktemp("paste") / "user_presets.json", accordion_cls=InputAccordion)[1]


def handler(blocks, component, trigger):
    """The python function gradio runs for `trigger` on `component` (gradio 3.41 and 4.40 keep them apart)."""
    if isinstance(blocks.fns, dict):  # gradio 4: BlockFunction.targets = [(block id, event name)]
        for fn in blocks.fns.values():
            if (component._id, trigger) in [tuple(t) for t in fn.targets] and fn.fn is not None:
                return fn.fn
        raise LookupError(trigger)
    for dep, fn in zip(blocks.dependencies, blocks.fns):
        if component._id in dep["targets"] and dep["trigger"] == trigger and fn.fn is not None:
            return fn.fn
    raise LookupError(trigger)


def values_after(updates, controls, before):
    """Control values after a gradio event returned `updates` for `controls`."""
    out = dict(before)
    for control, update in zip(controls, updates):
        if "value" in update:
            out[control] = update["value"]
    return out


def choice_values(control):
    """gradio 3.41 stores choices as (label, value) pairs."""
    return [c[1] if isinstance(c, tuple) else c for c in control.choices]


def ui_settings(built, values):
    return settings_from_dict({s.path: values[built.components[s.path]] for s in SPECS})


def leaf_values(settings):
    """What the setting controls (the preset buttons' inputs, in table order) hold for `settings`."""
    flat = to_flat(settings)
    return [script_args.ui_value(s, flat[s.path]) for s in SPECS]


def test_controls_follow_the_positional_order(built):
    _, b = built
    assert b.controls == [b.components[name] for name in script_args.arg_names()]
    assert script_args.arg_names()[:3] == ["enabled", "preset", SPECS[0].path]
    assert [c.value for c in b.controls] == script_args.default_args()


def test_every_setting_has_a_control_with_the_tables_range_and_default(built):
    _, b = built
    for spec in SPECS:
        control = b.components[spec.path]
        assert control.label == labels.label(spec.path) and control.elem_id == PREFIX + labels.item_id(spec.path)
        if spec.kind == "bool":
            assert isinstance(control, gr.Checkbox) and control.value is spec.default
        elif spec.kind == "choice":
            assert isinstance(control, gr.Radio) and choice_values(control) == [str(c) for c in spec.choices]
            assert control.value == str(spec.default)
        else:
            assert isinstance(control, gr.Slider), spec.path
            assert (control.minimum, control.maximum, control.value) == (spec.lo, spec.hi, spec.default)
            assert control.step == 1 if spec.integer else 0 < control.step <= (spec.hi - spec.lo) / 100


def test_slider_steps_reach_the_defaults_and_every_preset_value(built):
    _, b = built
    for spec in SPECS:
        control = b.components[spec.path]
        if not isinstance(control, gr.Slider):
            continue
        for value in [spec.default, spec.hi, *(to_flat(preset(n))[spec.path] for n in PRESETS)]:
            steps = (value - spec.lo) / control.step
            assert abs(steps - round(steps)) < 1e-6, (spec.path, value, control.step)


def test_input_accordion_is_the_enable_toggle(built):
    blocks, b = built
    assert isinstance(b.components["enabled"], InputAccordion) and b.components["enabled"].value is False
    assert b.components["enabled"].accordion.elem_id == PREFIX + "enabled"


def test_without_input_accordion_a_checkbox_in_a_closed_accordion(presets_path):
    blocks, b = build(presets_path, accordion_cls=None)
    enabled = b.components["enabled"]
    assert type(enabled) is gr.Checkbox and enabled.value is False and enabled.elem_id == PREFIX + "enabled"
    outer = [c for c in blocks.blocks.values() if isinstance(c, gr.Accordion) and c.elem_id == PREFIX + "accordion"]
    assert len(outer) == 1 and outer[0].open is False


def test_one_section_per_method_in_the_issues_order(built):
    blocks, _ = built
    titles = [c.label for c in blocks.blocks.values() if isinstance(c, gr.Accordion) and c.label != "Sloth"]
    assert titles == ["Slothful Attention", "Near-sighted Tile", "Near-sighted Attention", "Self-Attention Guidance",
                      "Perturbed-Attention Guidance", "Smoothed Energy Guidance", "AgentSD"]


def test_committed_hints_js_is_generated_from_the_settings_table():
    with open(hints.JS_PATH, encoding="utf-8") as f:
        assert f.read() == hints.render_js(), "run: python -m lib_sloth.webui.hints"
    for spec in SPECS:
        assert hints.hint_map()[labels.item_id(spec.path)] == spec.hint


def test_every_control_has_a_hint_keyed_by_its_elem_id(built):
    blocks, _ = built
    kinds = (gr.Checkbox, gr.Slider, gr.Radio, gr.Dropdown, gr.Textbox, gr.Button)
    ids = {c.elem_id[len(PREFIX):].removesuffix("-checkbox") for c in blocks.blocks.values()
           if isinstance(c, kinds) and (c.elem_id or "").startswith(PREFIX)} - {"paste_problems"}  # never shown
    assert ids == set(hints.hint_map())  # every control has one, and no hint is stale
    assert all(hint.strip() for hint in hints.hint_map().values())


def test_choosing_a_builtin_preset_updates_every_control_and_the_header_toggle(built):
    """Issue 10 item 13: a preset that does something ticks the InputAccordion's header toggle
    (A1111 1.10.1 modules/ui_components.py InputAccordion: its checkbox is the accordion's value),
    "off" unticks it; the dropdown's outputs are every setting, the toggle, then the status."""
    blocks, b = built
    leaf = [b.components[s.path] for s in SPECS]
    before = {c: c.value for c in leaf}
    for name in PRESETS:
        updates = handler(blocks, b.components["preset"], "input")(name)
        assert len(updates) == len(leaf) + 2 and all("value" in u for u in updates[:-1])
        assert ui_settings(b, values_after(updates, leaf, before)) == preset(name)
        assert updates[len(leaf)] == gr.update(value=name != "off")


def test_save_overwrite_choose_and_delete_a_user_preset(built, presets_path):
    blocks, b = built
    leaf = [b.components[s.path] for s in SPECS]
    mine = settings_from_dict({"sag": {"enabled": True, "scale": 1.5}, "upcast_attention": True})
    save = handler(blocks, b.extras["preset_save"], "click")
    dropdown, status = save("mine", *leaf_values(mine))
    assert dropdown["choices"] == [*PRESETS, "mine"] and dropdown["value"] == "mine" and "saved" in status["value"]
    assert user_presets.load(presets_path)[0] == {"mine": mine}

    dropdown, status = save("mine", *leaf_values(preset("speed")))
    assert "overwrote" in status["value"] and user_presets.load(presets_path)[0] == {"mine": preset("speed")}

    updates = handler(blocks, b.components["preset"], "input")("mine")
    assert ui_settings(b, values_after(updates, leaf, {c: c.value for c in leaf})) == preset("speed")

    dropdown, status = handler(blocks, b.extras["preset_delete"], "click")("", "mine")
    assert dropdown["choices"] == list(PRESETS) and "deleted" in status["value"]
    assert user_presets.load(presets_path)[0] == {}


def test_saving_invalid_controls_or_a_builtin_name_says_why(built, presets_path):
    blocks, b = built
    save = handler(blocks, b.extras["preset_save"], "click")
    values = leaf_values(SlothSettings())
    values[[s.path for s in SPECS].index("tile.enabled")] = True
    values[[s.path for s in SPECS].index("slothful.enabled")] = True
    assert "enable only one" in save("both", *values)[1]["value"]
    assert "built-in" in save("speed", *leaf_values(SlothSettings()))[1]["value"]
    assert not os.path.exists(presets_path)


def test_a_corrupt_presets_file_is_shown_and_ignored(presets_path):
    with open(presets_path, "w", encoding="utf-8") as f:
        f.write("{broken")
    _, b = build(presets_path, accordion_cls=None)
    assert "could not read user presets" in b.extras["status"].value
    # every browser user sees the status: the file is named, the server's folders are not
    assert os.path.basename(presets_path) in b.extras["status"].value
    assert os.path.dirname(os.path.abspath(presets_path)) not in b.extras["status"].value
    assert choice_values(b.components["preset"]) == list(PRESETS)


@pytest.mark.parametrize("content", [
    '{"version": 1, "presets": {"bad": {"tile": {"tile_size": NaN}}, "ok": {"sag": {"enabled": true}}}}',
    '{"version": 1, "presets": {"bad": {"sag": {"scale": 1e999}}, "ok": {"sag": {"enabled": true}}}}',
    '{"version": 1, "presets": {"bad": {"sag": {"scale": ' + "9" * 400 + '}}, "ok": {"sag": {"enabled": true}}}}',
    '{"version": 1, "presets": {"' + "n" * 5000 + '": {}, "ok": {"sag": {"enabled": true}}}}',
    "[" * 50000 + "]" * 50000,
])
def test_a_hostile_presets_file_never_takes_the_accordion_away(presets_path, content):
    """Issue 10 item 7: A1111 1.10.1 modules/scripts.py create_script_ui_inner calls ui() with no
    guard of its own at start-up; an exception there drops the whole accordion. Python's json
    reads NaN / 1e999 / huge ints, so the file's values go through the one value parser."""
    with open(presets_path, "w", encoding="utf-8") as f:
        f.write(content)
    _, b = build(presets_path, accordion_cls=InputAccordion)
    assert len(b.controls) == len(script_args.arg_names())
    status = b.extras["status"].value
    assert "Sloth:" in status and len(status) < 600
    if content.startswith("{"):
        assert choice_values(b.components["preset"]) == [*PRESETS, "ok"]


def test_building_writes_no_file(presets_path):
    build(presets_path)
    assert not os.path.exists(presets_path)


def test_backend_note_is_shown_at_the_top(presets_path):
    _, b = build(presets_path, accordion_cls=None, backend_note="not supported on this Forge version")
    assert "not supported on this Forge version" in b.extras["note"].value


def test_switching_a_rewrite_on_switches_its_rivals_off(built):
    blocks, b = built
    switch = handler(blocks, b.components["tile.enabled"], "input")
    assert switch(True) == [gr.update(value=False), gr.update(value=False), gr.update(value=False)]
    assert all("value" not in u for u in switch(False))
    assert script_args.conflicting_enables("tile.enabled") == ["slothful.enabled", "nearsighted.enabled",
                                                               "agentsd.enabled"]
    assert script_args.conflicting_enables("sag.enabled") == []


def test_paste_fields_are_labels_that_paste_every_control(built):
    _, b = built
    # enabled + every setting, then the hidden problems box, the status line and the preset dropdown
    assert len(b.infotext_fields) == 1 + len(SPECS) + 3
    assert b.paste_field_names == [str(key) for _, key in b.infotext_fields[:1 + len(SPECS)]]
    assert all(callable(key) for _, key in b.infotext_fields)
    assert all(isinstance(key, str) for _, key in b.infotext_fields[:-1])


def paste(b, text):
    controls = [c for c, _ in b.infotext_fields]
    updates = infotext_utils.apply_paste(text, b.infotext_fields)
    return values_after(updates, controls, {c: c.value for c in controls}), updates


@hsettings(max_examples=15, deadline=None)
@given(random_settings())
def test_pasting_an_info_text_restores_every_control(paste_ui, settings):
    b = paste_ui
    line = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in
                     {"Steps": 20, "Sampler": "Euler", "Seed": 1, **infotext.to_params(settings)}.items())
    values, _ = paste(b, f"a photo\n{line}")
    assert values[b.components["enabled"]] is True
    assert ui_settings(b, values) == settings_from_dict(pasted_subset(settings))


def test_pasting_an_info_text_without_our_keys_switches_sloth_off(built):
    _, b = built
    values, updates = paste(b, "a photo\nSteps: 20, Sampler: Euler, Seed: 1")
    assert updates[0] == gr.update(value=False)
    assert all("value" not in u for u in updates[1:1 + len(SPECS)])  # every setting is left as it was
    assert updates[-1] == gr.update(value=None)  # the dropdown no longer claims a preset


def test_building_the_accordion_warns_nothing(presets_path):
    """No keyword or call that this gradio (3.41.2, or 4.40 for Forge main) deprecates or ignores."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(presets_path, accordion_cls=InputAccordion)
    # gradio 4.40's own app setup calls fastapi's deprecated on_event: not ours
    ours = [str(w.message) for w in caught if "on_event is deprecated" not in str(w.message)]
    assert ours == [], gr.__version__


@pytest.mark.parametrize("name", ["speed", "agentsd", "background fix"])
def test_paste_functions_give_plain_values_that_survive_forge_mains_api_cast(built, name):
    """Forge main's API fills script args from a request's `infotext` (modules/api/api.py @ dfdcbab6,
    apply_infotext, lines 404-407): it unwraps only gradio 3's ``generic_update`` and casts any other
    value with ``type(control.value)(value)``, so a gradio 4 ``gr.update()`` would arrive as a dict (or
    its str). Every Sloth setting's paste function returns None or a plain value that survives the cast."""
    from lib_sloth import values as value_parser

    _, b = built
    line = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in infotext.to_params(preset(name)).items())
    specs = {s.path: s for s in SPECS}
    for params in (infotext_utils.parse_generation_parameters(f"a\nSteps: 2, {line}"), {}):
        for control, key in b.infotext_fields[:-1]:  # the last one is the preset dropdown's clear
            got = key(params)
            assert got is None or type(got) in (bool, int, float, str), (key.path, got)
            if got is None or control.value is None:
                continue
            cast = type(control.value)(got)
            if key.path in specs:
                assert value_parser.parse(specs[key.path], cast) == value_parser.parse(specs[key.path], got)
            else:
                assert cast == got
