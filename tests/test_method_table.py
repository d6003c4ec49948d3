"""The method table: a sixth method defined in this file, registered with one entry, reaches every
part of the extension (settings, validation, presets, the patch, the UI, hints, info text written
and pasted back, X/Y/Z, the API) with no other file edited; and it leaves nothing behind.
"""
import os
import sys

import gradio as gr
import pytest
import torch

from lib_sloth import infotext, methods
from lib_sloth.fields import SettingsError
from lib_sloth.patch import SlothPatch
from lib_sloth.presets import PRESETS, preset
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict
from lib_sloth.webui import args as script_args
from lib_sloth.webui import hints, labels, positional, ui, xyz
from method_examples import VSCALE, VScaleSettings
from unets import unet_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN_ROOT = os.path.join(ROOT, "tests", "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)


# ---- the sixth method: everything it needs, in one place (tests/method_examples.py) ---------------
USED = {"vscale.enabled": True, "vscale.scale": 0.5}


@pytest.fixture
def vscale():
    with methods.registered(VSCALE):
        yield VSCALE


# ---- settings ---------------------------------------------------------------------------------
def test_its_settings_join_the_table_after_every_builtin_and_before_the_shared_ones(vscale):
    paths = [s.path for s in iter_fields()]
    assert paths[-4:] == ["vscale.enabled", "vscale.scale", "upcast_attention", "show_maps"]
    assert SlothSettings().vscale == VScaleSettings()
    s = settings_from_dict({"vscale": {"enabled": True, "scale": "0.5"}})
    assert s.vscale.scale == 0.5 and s.active and not settings_from_dict({"vscale.enabled": True}).active


def test_its_ranges_and_conflicts_are_validated(vscale):
    with pytest.raises(SettingsError, match=r"^vscale.scale=3(\.0)? .*\[0.0, 2.0\]"):
        settings_from_dict({"vscale.scale": 3})
    with pytest.raises(SettingsError, match=r"^vscale.enabled: tile and vscale .* tiles need the plain values"):
        settings_from_dict({"vscale.enabled": True, "tile.enabled": True})
    assert script_args.conflicting_enables("vscale.enabled") == ["tile.enabled"]
    assert "vscale.enabled" in script_args.conflicting_enables("tile.enabled")


def test_its_preset_is_a_builtin_preset(vscale):
    assert list(PRESETS)[-1] == "dim" and preset("dim") == settings_from_dict(USED)


def test_the_patch_runs_its_planner_and_neutral_settings_stay_bit_identical(vscale, sd15):
    x, t, c = unet_inputs(sd15, 2, 16, 16)
    with torch.no_grad():
        base = sd15(x, t, c)
        with SlothPatch(sd15, settings_from_dict({"vscale.enabled": True})) as patch:
            assert not patch.installed
            neutral = sd15(x, t, c)
        with SlothPatch(sd15, settings_from_dict(USED)) as patch:
            changed = sd15(x, t, c)
    assert torch.equal(neutral, base)
    assert torch.isfinite(changed).all() and not torch.allclose(changed, base)
    assert len(patch.rewritten) == len(patch.layers)  # every self-attention layer, every call


# ---- UI, hints, labels ------------------------------------------------------------------------
def test_the_accordion_has_its_section_controls_and_hints(vscale, tmp_path):
    with gr.Blocks() as blocks:
        built = ui.build(elem_id=lambda item: "script_txt2img_sloth_" + item,
                         presets_path=str(tmp_path / "user_presets.json"), accordion_cls=None)
    sections = [b for b in blocks.blocks.values() if isinstance(b, gr.Accordion)]
    assert "V Scale" in [s.label for s in sections]
    scale = built.components["vscale.scale"]
    assert (scale.label, scale.minimum, scale.maximum, scale.value) == ("VScale scale", 0.0, 2.0, 1.0)
    assert built.components["vscale.enabled"].label == "Enable V Scale"
    pinned = positional.pinned()  # every built-in control keeps its index; the sixth method's come last
    assert built.controls == [built.components[name] for name in [*pinned, "vscale.enabled", "vscale.scale"]]
    assert hints.hint_map()["vscale__scale"] == "Multiplier of V; 1 = unchanged"
    assert '"vscale__enabled": "Scale the values of self-attention"' in hints.render_js()
    assert labels.sections() == ["slothful", "tile", "nearsighted", "sag", "vscale", "agentsd"]  # ui_rank 0 < 1
    assert labels.xyz_label("vscale.scale") == "[Sloth] VScale scale"


# ---- the WebUI: info text, paste, X/Y/Z, API ---------------------------------------------------
@pytest.fixture
def webui(vscale, tmp_path):
    """The A1111 stand-in started with the sixth method registered (its UI built from the table)."""
    import standin
    import standin_sd_model
    from modules import scripts

    standin.reset()
    standin.use_model(standin_sd_model.make_model("sd1", tokens=4, context_dim=8, echo=True))
    standin.load_scripts([ROOT])
    module = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "sloth.py")
    module.Script.presets_path = str(tmp_path / "user_presets.json")
    standin.start_ui()
    attached = []

    class Recorder(module.sloth_backend.Backend):
        def attach(self, p, settings, seed):
            attached.append(settings)
            return module.sloth_backend.PassNotes()

    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        runner.script("Sloth").backend = Recorder()
    yield standin, scripts, attached
    standin.reset()


def txt2img(standin, args):
    p = standin.txt2img(script_args=args, prompt="a cat", width=32, height=32)
    p.steps, p.sampler_name = 2, "Euler"
    return p


def test_its_info_text_is_written_and_pasted_back(webui):
    standin, scripts, attached = webui
    from modules import infotext_utils
    from modules.api import api as api_module

    used = settings_from_dict(USED)
    runner = scripts.scripts_txt2img
    processed = standin.run(txt2img(standin, standin.script_args_for(runner, "Sloth", script_args.to_args(used))))
    assert attached == [used]
    params = infotext_utils.parse_generation_parameters(processed.info)
    assert params["Sloth VScale"] == "scale=0.5" and infotext.read(params)["vscale.scale"] == 0.5
    script = runner.script("Sloth")
    mentioned = {}
    request = api_module.SimpleRequest(infotext=processed.info)
    standin.api.apply_infotext(request, "txt2img", script_runner=runner, mentioned_script_args=mentioned)
    args = standin.api.init_script_args(request, standin.api.default_script_arg_txt2img, None, None, runner,
                                        input_script_args=mentioned)
    assert script_args.resolve(args[script.args_from:script.args_to]).settings == used


def test_its_xyz_axes_and_api_names_work(webui):
    standin, scripts, attached = webui
    from modules.api import api as api_module

    xyz_module = standin.xyz_grid_module()
    axis = xyz_module.axis_by_label("[Sloth] VScale scale")
    assert axis.type is float and xyz_module.axis_by_label("[Sloth] VScale enabled").choices() == ["True", "False"]
    with pytest.raises(RuntimeError, match="VScale scale"):
        axis.confirm(None, [0.5, 2.5])
    runner = scripts.scripts_txt2img
    p = txt2img(standin, standin.script_args_for(runner, "Sloth", script_args.default_args()))
    xyz_module.run_cell(p, [(xyz_module.axis_by_label("[Sloth] VScale enabled"), "True"), (axis, 0.25)])
    assert attached[-1] == settings_from_dict({"vscale.enabled": True, "vscale.scale": 0.25})

    request = api_module.SimpleRequest(alwayson_scripts={"Sloth": {"args": [{"vscale": {"scale": 1.5},
                                                                             "preset": "dim"}]}}, prompt="a")
    api_module.run_txt2img_api(standin.api, request, prompt="a", steps=2, width=32, height=32, sampler_name="Euler")
    assert attached[-1] == settings_from_dict({"vscale.enabled": True, "vscale.scale": 1.5})
    assert "vscale.scale" in script_args.arg_names()


def test_an_api_client_of_the_release_before_it_keeps_its_settings(webui):
    """A client that sends the first release's positional list (61 values) through the API: the
    WebUI fills the sixth method's args with the UI's defaults, and the job runs what was sent."""
    standin, scripts, attached = webui
    from modules.api import api as api_module

    used = settings_from_dict({"sag.enabled": True, "sag.scale": 0.75, "nearsighted.enabled": True})
    named = dict(zip(script_args.arg_names(), script_args.to_args(used)))
    old = [named[name] for name in positional.V1]
    request = api_module.SimpleRequest(alwayson_scripts={"Sloth": {"args": old}}, prompt="a")
    api_module.run_txt2img_api(standin.api, request, prompt="a", steps=2, width=32, height=32, sampler_name="Euler")
    assert attached[-1] == used and attached[-1].vscale == VScaleSettings()


# ---- the table itself ---------------------------------------------------------------------------
def test_registration_is_undone_and_leaves_nothing_behind():
    undo = methods.register(VSCALE)
    assert "vscale" in methods.names()
    undo()
    assert methods.all_methods() == methods.BUILTIN
    assert not any(s.path.startswith("vscale.") for s in iter_fields()) and "dim" not in PRESETS
    assert not hasattr(SlothSettings(), "vscale")


@pytest.mark.parametrize("change, problem", [
    ({"name": "slothful"}, "registered"),
    ({"name": "upcast_attention"}, "identifier"),
    ({"infotext_key": "Sloth SAG"}, "info-text key"),
    ({"infotext_key": "Sloth, bad"}, "info-text key"),
    ({"conflicts": (methods.Conflict(("nope",), "x"),)}, "unknown methods"),
    ({"presets": {"speed": {}}}, "presets"),
])
def test_a_method_that_would_clash_is_refused(change, problem):
    import dataclasses

    with pytest.raises(ValueError, match=problem):
        methods.register(dataclasses.replace(VSCALE, **change))
    assert methods.all_methods() == methods.BUILTIN


def test_the_builtin_orders_are_the_documented_ones():
    assert methods.names() == ["slothful", "tile", "nearsighted", "agentsd", "sag"]  # the args order
    assert [m.name for m in methods.in_plan_order()] == ["agentsd", "slothful", "tile", "nearsighted"]
    assert labels.sections() == ["slothful", "tile", "nearsighted", "sag", "agentsd"]
    assert [m.infotext_key for m in methods.BUILTIN] == ["Sloth Slothful", "Sloth Tile", "Sloth NSA",
                                                          "Sloth AgentSD", "Sloth SAG"]  # the v1 format
    assert xyz.ENABLED_LABEL == "[Sloth] Enabled"
