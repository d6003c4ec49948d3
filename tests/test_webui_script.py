"""scripts/sloth.py in the A1111 stand-in: hooks, info text, API args and X/Y/Z cells.

The extension is loaded like the WebUI loads it (scripts/ with the extension folder on sys.path)
and jobs run through the stand-in's process_images with a tiny model. The backend adapter is a
recorder injected into the Script: these tests check what the Script hands to `attach`, per pass.
"""
import os
import sys

import gradio as gr
import pytest
import torch

from lib_sloth.webui.job import job_of, new_job
from lib_sloth import infotext
from lib_sloth.fields import SettingsError
from lib_sloth.presets import preset
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict
from lib_sloth.webui import args as script_args
from lib_sloth.webui import backend as sloth_backend
from lib_sloth.webui import hooks, xyz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN_ROOT = os.path.join(ROOT, "tests", "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

import standin  # noqa: E402
import standin_sd_model  # noqa: E402
from modules import infotext_utils, script_callbacks, scripts  # noqa: E402
from modules.api import api as api_module  # noqa: E402

SPECS = list(iter_fields())
SLOTHFUL = settings_from_dict({"slothful.enabled": True})


class RecordingBackend(sloth_backend.Backend):
    """Stands in for the adapter (lib_sloth/webui/a1111.py): records each attach, patches nothing."""

    name = "recording"

    def __init__(self, notes=(), error=None):
        self.calls, self.notes, self.error = [], list(notes), error

    def attach(self, p, settings, seed):
        self.calls.append({"settings": settings, "seed": seed, "hr": p.is_hr_pass, "sampler": p.sampler,
                           "p": p})
        if self.error:
            raise self.error
        return sloth_backend.PassNotes(self.notes)


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The WebUI started once for this file: scripts loaded, both tabs and the API built."""
    standin.reset()
    standin.use_model(standin_sd_model.make_model("sd1", tokens=4, context_dim=8, echo=True))
    standin.load_scripts([ROOT])
    module = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "sloth.py")
    module.Script.presets_path = str(tmp_path_factory.mktemp("presets") / "user_presets.json")
    standin.start_ui()
    yield module
    standin.reset()


@pytest.fixture
def webui(started):
    """A fresh recording backend in both tabs, and no user presets file."""
    recorder = RecordingBackend()
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        runner.script("Sloth").backend = recorder
    if os.path.exists(started.Script.presets_path):
        os.remove(started.Script.presets_path)
    return started, recorder


def sloth_args(settings=None, enabled=True, runner=None):
    runner = runner or scripts.scripts_txt2img
    return standin.script_args_for(runner, "Sloth", script_args.to_args(settings or SlothSettings(), enabled))


def txt2img(args=None, **kwargs):
    p = standin.txt2img(script_args=args, prompt="a cat", width=32, height=32, **kwargs)
    p.steps, p.sampler_name = 2, "Euler"
    return p


def params_of(processed):
    return infotext_utils.parse_generation_parameters(processed.info)


# ----------------------------------------------------------------------------------- the Script

def test_one_always_on_script_named_sloth_with_the_documented_args(webui):
    script = scripts.scripts_txt2img.script("Sloth")
    assert script.title() == "Sloth" and script.alwayson and script.api_info.name == "sloth"
    assert script.args_to - script.args_from == len(script_args.arg_names())
    assert [a.label for a in script.api_info.args][:2] == ["Sloth", "Preset"]
    defaults = standin.api.default_script_arg_txt2img[script.args_from:script.args_to]
    assert defaults == script_args.default_args()
    assert script.elem_id("enabled") == "script_txt2img_sloth_enabled"


def test_ui_has_no_side_effects(webui):
    module, _ = webui
    script = scripts.scripts_img2img.script("Sloth")
    before = {k: len(v) for k, v in script_callbacks.callback_map.items()}
    with gr.Blocks():
        controls = script.ui(True)
    assert len(controls) == len(script_args.arg_names())
    assert {k: len(v) for k, v in script_callbacks.callback_map.items()} == before
    assert os.listdir(os.path.dirname(module.Script.presets_path)) == []


def test_disabled_extension_attaches_nothing_and_writes_no_info_text(webui):
    _, recorder = webui
    processed = standin.run(txt2img(sloth_args(SLOTHFUL, enabled=False)))
    assert recorder.calls == [] and not any(k.startswith("Sloth") for k in params_of(processed))


@pytest.mark.parametrize("settings", [SlothSettings(), preset("off"), settings_from_dict({"upcast_attention": True})])
def test_enabled_without_an_active_method_writes_no_info_text_and_attaches_nothing(webui, settings):
    """Issue 10 item 13: the `off` preset (or no method ticked) makes a plain image, so its info
    text (A1111 1.10.1 modules/processing.py create_infotext, from p.extra_generation_params)
    carries no Sloth key; pasting it back switches Sloth off, which gives the same image."""
    _, recorder = webui
    processed = standin.run(txt2img(sloth_args(settings)))
    assert recorder.calls == [] and not any(k.startswith("Sloth") for k in params_of(processed))


def test_txt2img_attaches_once_per_batch_with_the_batchs_first_seed(webui):
    _, recorder = webui
    p = txt2img(sloth_args(SLOTHFUL), batch_size=2, n_iter=2)
    p.seed = 100
    processed = standin.run(p)
    assert [c["seed"] for c in recorder.calls] == [processed.all_seeds[0], processed.all_seeds[2]]
    assert all(c["settings"] == SLOTHFUL and not c["hr"] for c in recorder.calls)
    assert all(c["sampler"] is not None for c in recorder.calls)  # this pass's sampler already exists
    assert job_of(p).settings == SLOTHFUL


def test_hires_fix_attaches_for_the_first_and_the_second_pass(webui):
    _, recorder = webui
    p = txt2img(sloth_args(SLOTHFUL), enable_hr=True, hr_scale=2.0, hr_second_pass_steps=2, denoising_strength=0.5,
                hr_upscaler="Latent")
    standin.run(p)
    assert [c["hr"] for c in recorder.calls] == [False, True]
    assert recorder.calls[0]["sampler"] is not recorder.calls[1]["sampler"]


def test_img2img_attaches_once(webui):
    _, recorder = webui
    p = standin.img2img(script_args=sloth_args(SLOTHFUL, runner=scripts.scripts_img2img), prompt="a", width=32,
                        height=32, denoising_strength=0.5)
    p.steps, p.sampler_name = 2, "Euler"
    p.init_latent = torch.zeros(1, 4, 4, 4)
    processed = standin.run(p)
    assert len(recorder.calls) == 1 and recorder.calls[0]["settings"] == SLOTHFUL
    assert "Sloth Slothful" in params_of(processed)


def test_notes_from_the_backend_reach_the_info_text_once(webui, capsys):
    _, recorder = webui
    recorder.notes = ["SAG skipped: no uncond, at CFG 1"]
    p = txt2img(sloth_args(SLOTHFUL), enable_hr=True, hr_scale=2.0, denoising_strength=0.5, hr_upscaler="Latent")
    processed = standin.run(p)
    assert params_of(processed)[infotext.NOTES_KEY] == "SAG skipped: no uncond, at CFG 1"
    assert capsys.readouterr().err.count("SAG skipped") == 1


def test_a_failing_backend_is_reported_and_the_job_finishes(webui, capsys):
    _, recorder = webui
    recorder.error = RuntimeError("boom")
    processed = standin.run(txt2img(sloth_args(SLOTHFUL)))
    assert len(processed.images) == 1 and "boom" in params_of(processed)[infotext.NOTES_KEY]
    assert "could not attach" in capsys.readouterr().err


def test_a1111_before_1_10_attaches_from_process_batch_and_before_hr(webui, monkeypatch):
    module, recorder = webui
    script = scripts.scripts_txt2img.script("Sloth")
    p = txt2img(sloth_args(SLOTHFUL))
    hooks.prepare_job(p, p.script_args[script.args_from:script.args_to], script.presets_path)
    script.process_batch(p)
    script.before_hr(p)
    assert recorder.calls == []  # 1.10 has process_before_every_sampling: these stay quiet
    monkeypatch.delattr(scripts.Script, "process_before_every_sampling")
    script.process_batch(p)
    script.before_hr(p)
    assert len(recorder.calls) == 2


def test_pasted_info_text_is_migrated_by_the_registered_callback(webui, monkeypatch):
    old = infotext.Migration(1, lambda p: "Sloth old" in p, lambda p: p.update({"Sloth": "v1"}) or p.pop("Sloth old"))
    monkeypatch.setattr(infotext, "MIGRATIONS", (old,))
    params = {"Sloth old": "1"}
    script_callbacks.infotext_pasted_callback("...", params)
    assert params == {"Sloth": "v1", infotext.UI_PASTE_MARK: True}


# ----------------------------------------------------------------------------------- info text

def test_info_text_of_an_image_restores_the_settings_through_the_api_infotext_field(webui):
    _, recorder = webui
    used = settings_from_dict({"nearsighted": {"enabled": True, "base_tile_size": 20}, "sag.enabled": True,
                               "sag.scale": 1.25, "upcast_attention": True})
    processed = standin.run(txt2img(sloth_args(used)))
    runner = scripts.scripts_txt2img
    script = runner.script("Sloth")
    mentioned = {}
    request = api_module.SimpleRequest(infotext=processed.info)
    standin.api.apply_infotext(request, "txt2img", script_runner=runner, mentioned_script_args=mentioned)
    args = standin.api.init_script_args(request, standin.api.default_script_arg_txt2img, None, None, runner,
                                        input_script_args=mentioned)
    restored = script_args.resolve(args[script.args_from:script.args_to])
    assert restored.enabled and restored.settings == used


def test_grid_cells_do_not_share_our_info_text(webui):
    module, recorder = webui
    xyz_module = standin.xyz_grid_module()
    p = txt2img(sloth_args(SLOTHFUL))
    _, on = xyz_module.run_cell(p, [(xyz_module.axis_by_label(xyz.ENABLED_LABEL), "True")])
    _, off = xyz_module.run_cell(p, [(xyz_module.axis_by_label(xyz.ENABLED_LABEL), "False")])
    assert "Sloth Slothful" in params_of(on) and "Sloth" not in params_of(off)
    assert not any(k.startswith("Sloth") for k in p.extra_generation_params)


# ----------------------------------------------------------------------------------- API

def run_api(args, **kwargs):
    request = api_module.SimpleRequest(alwayson_scripts={"Sloth": {"args": args}}, prompt="a", **kwargs)
    return api_module.run_txt2img_api(standin.api, request, prompt="a", steps=2, width=32, height=32,
                                      sampler_name="Euler")


def test_api_takes_one_dict_of_named_values(webui):
    _, recorder = webui
    run_api([{"slothful": {"enabled": True, "input": {"k_blend": 0.3}}, "sag.scale": 1.0, "sag.enabled": True}])
    settings = recorder.calls[0]["settings"]
    assert settings.slothful.enabled and settings.slothful.input.k_blend == 0.3 and settings.sag.scale == 1.0


def test_api_dict_preset_is_the_base_and_enabled_defaults_to_true(webui):
    _, recorder = webui
    run_api([{"preset": "speed", "nearsighted.peak_time": 0.7}])
    settings = recorder.calls[0]["settings"]
    assert settings == settings_from_dict({"nearsighted.peak_time": 0.7}, base=preset("speed"))
    run_api([{"enabled": False, "preset": "speed"}])
    assert len(recorder.calls) == 1


def test_api_takes_the_positional_list_of_the_ui(webui):
    _, recorder = webui
    wanted = settings_from_dict({"agentsd.enabled": True, "agentsd.max_downsample": 2})
    run_api(script_args.to_args(wanted))
    assert recorder.calls[0]["settings"] == wanted
    run_api([True, None, True])  # short lists keep the UI defaults for the rest
    assert recorder.calls[1]["settings"] == SLOTHFUL


@pytest.mark.parametrize("bad, named", [
    ({"slothful.input.stride": 2}, "slothful.input.stride"),
    ({"slothful": {"input": {"k_blend": 3}}, "slothful.enabled": True}, "slothful.input.k_blend"),
    ({"preset": "turbo"}, "preset"),
    ({"enabled": "sure"}, "enabled"),
    ({"tile.enabled": True, "slothful.enabled": True}, "enable only one"),
])
def test_api_bad_name_or_value_is_named_and_nothing_is_patched(webui, capsys, bad, named):
    _, recorder = webui
    processed = run_api([bad])
    assert recorder.calls == []
    error = params_of(processed)[infotext.ERROR_KEY]
    assert named in error and "Nothing was patched" in error
    assert named in capsys.readouterr().err and named in processed.comments
    assert "Sloth" not in params_of(processed)


def test_an_error_that_ends_in_a_question_gets_no_second_punctuation(webui):
    error = params_of(run_api([{"slothfull.input": 6}]))[infotext.ERROR_KEY]
    assert error.startswith("'slothfull.input' is not a setting; did you mean slothful.input.slothful, ")
    assert error.endswith("? Nothing was patched for this job.") and "?." not in error
    error = params_of(run_api([{"slothful.input.slothful": 99}]))[infotext.ERROR_KEY]
    assert error == "slothful.input.slothful=99 is out of range: allowed [0.0, 50.0]. Nothing was patched for this job."


@pytest.mark.parametrize("bad, field", [
    ({"tile.enabled": True, "tile.tile_size": "nan"}, "tile.tile_size"),  # seen in the real A1111 1.10.1
    ({"tile.enabled": True, "tile.tile_size": float("inf")}, "tile.tile_size"),
    ({"sag.enabled": True, "sag.scale": 10 ** 400}, "sag.scale"),
    ({"sag.enabled": True, "sag.scale": "1e999"}, "sag.scale"),
    ({"agentsd.enabled": True, "agentsd.max_downsample": float("nan")}, "agentsd.max_downsample"),
])
def test_api_nan_inf_and_huge_numbers_give_a_sloth_error_not_a_console_traceback(webui, capsys, bad, field):
    """Issue 10 item 7. A1111 1.10.1 modules/scripts.py ScriptRunner.process (line 846 in the
    1.10.1 tree) catches any exception of Script.process and only logs "Error running process":
    a ValueError escaping from `process` meant no `Sloth error` and a silently plain image."""
    _, recorder = webui
    processed = run_api([bad])
    assert recorder.calls == []
    error = params_of(processed)[infotext.ERROR_KEY]
    assert error.startswith(field + "=") and "allowed" in error and len(error) < 200
    assert "Error running process" not in capsys.readouterr().err


def api_infotext_args(text):
    """The Sloth args an API request with only an ``infotext`` field resolves to (A1111 1.10.1
    modules/api/api.py apply_infotext, line 363: paste fields whose component is a script input
    become script args, coerced by type(component.value); init_script_args then copies them)."""
    runner = scripts.scripts_txt2img
    script = runner.script("Sloth")
    mentioned = {}
    request = api_module.SimpleRequest(infotext=text)
    standin.api.apply_infotext(request, "txt2img", script_runner=runner, mentioned_script_args=mentioned)
    args = standin.api.init_script_args(request, standin.api.default_script_arg_txt2img, None, None, runner,
                                        input_script_args=mentioned)
    return args[script.args_from:script.args_to]


@pytest.mark.parametrize("token, field", [("tile_size=nan", "tile.tile_size"), ("tile_size=1e999", "tile.tile_size"),
                                          ("global_ratio=inf", "tile.global_ratio"),
                                          ("max_depth=" + "9" * 400, "tile.max_depth"),
                                          ("tile_sise=32", "Sloth Tile: tile_sise")])
def test_a_bad_token_in_the_api_infotext_field_fails_the_job_with_its_name(webui, token, field):
    """The API's infotext field skips on_infotext_pasted (only connect_paste's paste_func calls
    it: modules/infotext_utils.py line 501 in 1.10.1), so a bad token cannot be shown anywhere but
    the job: it becomes a SettingsError naming the token, and nothing is patched."""
    text = f"a cat\nSteps: 2, Sampler: Euler, Seed: 1, Sloth: v1 upcast_attention=0, Sloth Tile: {token}"
    with pytest.raises(SettingsError) as err:
        script_args.resolve(api_infotext_args(text))
    assert field in str(err.value) and len(str(err.value)) < 250
    fine = api_infotext_args("a cat\nSteps: 2, Sloth: v1 upcast_attention=0, Sloth Tile: tile_size=40")
    assert script_args.resolve(fine).settings.tile.tile_size == 40


def test_a_bad_token_pasted_in_the_ui_is_shown_and_leaves_its_control_alone(webui):
    """A UI paste (modules/infotext_utils.py connect_paste: the callback at line 501, then one
    value per paste field, None = unchanged) shows the problem in the status line, keeps the
    control's value and lets the job run with what the controls show."""
    runner = scripts.scripts_txt2img
    script = runner.script("Sloth")
    ours = {id(c) for c in script.controls}  # the UI's own fields (ui() runs again for the API defaults)
    fields = [(c, k) for c, k in runner.infotext_fields if id(c) in ours or isinstance(k, infotext.PasteKey)]
    text = "a cat\nSteps: 2, Sloth: v1 upcast_attention=0, Sloth Tile: tile_size=nan global_ratio=0.25"
    updates = dict(zip([id(c) for c, _ in fields], infotext_utils.apply_paste(text, fields)))
    controls = dict(zip(script_args.arg_names(), script.controls))
    assert "value" not in updates[id(controls["tile.tile_size"])]
    assert updates[id(controls["tile.global_ratio"])] == gr.update(value=0.25)
    assert updates[id(controls["paste_problems"])] == gr.update(value="")
    status = next(u for (c, k), u in zip(fields, infotext_utils.apply_paste(text, fields)) if k == infotext.status_paste_key())
    assert "tile.tile_size='nan'" in status["value"] and "[16, 64]" in status["value"]


# ----------------------------------------------------------------------------------- X/Y/Z

def sloth_axes(module):
    return [o for o in module.axis_options if o.label.startswith("[Sloth]")]


def test_axes_are_registered_once_per_setting_plus_enabled_and_preset(webui):
    xyz_module = standin.xyz_grid_module()
    axes = sloth_axes(xyz_module)
    assert len(axes) == len(SPECS) + 2 and len({a.label for a in axes}) == len(axes)
    assert axes[0].label == "[Sloth] Enabled" and axes[1].label == "[Sloth] Preset"
    assert xyz_module.axis_by_label("[Sloth] Slothful input K blend").type is float
    assert xyz_module.axis_by_label("[Sloth] Tile size").type is int
    assert xyz_module.axis_by_label("[Sloth] AgentSD max downsample").choices() == ["1", "2", "4", "8"]
    assert xyz_module.axis_by_label("[Sloth] SAG enabled").choices() == ["True", "False"]
    labels = [a.label for a in scripts.scripts_txt2img.script("X/Y/Z plot").current_axis_options]
    assert "[Sloth] Near-sighted peak time" in labels  # registered before the xyz UI copied the list


def test_axes_are_found_under_both_module_names_and_never_duplicated(webui):
    module, _ = webui
    for name in ("xyz_grid.py", "scripts.xyz_grid"):
        xyz_module = standin.register_xyz_grid(name)
        assert xyz.find_xyz_module(scripts.scripts_data) is xyz_module
        script_callbacks.before_ui_callback()  # e.g. the UI being built again
        assert len(sloth_axes(xyz_module)) == len(SPECS) + 2
    xyz_module.axis_options[:] = [o for o in xyz_module.axis_options if not o.label.startswith("[Sloth]")]
    assert xyz.register(xyz_module, module.Script.presets_path) == len(SPECS) + 2


def test_a_cell_reads_its_values_from_its_own_copy_of_p(webui):
    _, recorder = webui
    xyz_module = standin.xyz_grid_module()
    p = txt2img(sloth_args(SlothSettings(), enabled=False))
    script_args_before = p.script_args
    pc, processed = xyz_module.run_cell(p, [(xyz_module.axis_by_label("[Sloth] Slothful enabled"), "True"),
                                            (xyz_module.axis_by_label("[Sloth] Slothful input K blend"), 0.7)])
    assert recorder.calls[0]["settings"] == settings_from_dict({"slothful.enabled": True,
                                                                "slothful.input.k_blend": 0.7})
    assert recorder.calls[0]["p"] is pc and pc.sloth__slothful__input__k_blend == 0.7
    assert not any(k.startswith("sloth") for k in vars(p)) and p.script_args is script_args_before
    assert "in_k_blend=0.7" in params_of(processed)["Sloth Slothful"]
    xyz_module.run_cell(p, [])
    assert len(recorder.calls) == 1  # the next cell is back to the UI values: off


def test_an_axis_turning_a_rewrite_on_turns_the_ui_rewrite_off(webui):
    _, recorder = webui
    xyz_module = standin.xyz_grid_module()
    p = txt2img(sloth_args(SLOTHFUL))
    xyz_module.run_cell(p, [(xyz_module.axis_by_label("[Sloth] Tile enabled"), "True")])
    settings = recorder.calls[0]["settings"]
    assert settings.tile.enabled and not settings.slothful.enabled


def test_preset_and_enabled_axes(webui):
    module, recorder = webui
    xyz_module = standin.xyz_grid_module()
    p = txt2img(sloth_args(SLOTHFUL))
    xyz_module.run_cell(p, [(xyz_module.axis_by_label("[Sloth] Preset"), "speed"),
                            (xyz_module.axis_by_label("[Sloth] Near-sighted peak time"), 0.9)])
    assert recorder.calls[0]["settings"] == settings_from_dict({"nearsighted.peak_time": 0.9}, base=preset("speed"))
    xyz_module.run_cell(p, [(xyz_module.axis_by_label("[Sloth] Enabled"), "False"),
                            (xyz_module.axis_by_label("[Sloth] SAG scale"), 1.0)])
    assert len(recorder.calls) == 1
    with pytest.raises(RuntimeError, match="not a preset"):
        xyz_module.axis_by_label("[Sloth] Preset").confirm(p, ["speed", "nope"])


def test_out_of_range_axis_values_are_refused_before_the_grid_runs(webui):
    xyz_module = standin.xyz_grid_module()
    axis = xyz_module.axis_by_label("[Sloth] Slothful input K blend")
    axis.confirm(None, [0.0, 1.0])
    with pytest.raises(RuntimeError, match=r"\[Sloth\] Slothful input K blend: .*\[0.0, 1.0\]"):
        axis.confirm(None, [0.5, 1.5])
    xyz_module.axis_by_label("[Sloth] AgentSD early merge cell width").confirm(None, [1, 8])  # ratio cap: per cell


def test_a_whole_grid_gives_each_cell_its_value(webui):
    _, recorder = webui
    runner = scripts.scripts_txt2img
    xyz_script = runner.script("X/Y/Z plot")
    labels = [a.label for a in xyz_script.current_axis_options]
    base = list(sloth_args(SLOTHFUL, enabled=False))
    base[0] = runner.selectable_scripts.index(xyz_script) + 1
    values = [labels.index("[Sloth] Slothful input K blend"), "0.1, 0.9", None, 0, "", None, 0, "", None,
              True, False, False, False, False, False, False, 0, True]
    p = txt2img(standin.script_args_for(runner, "X/Y/Z plot", values, base=base))
    processed = standin.run(p)
    assert [c["settings"].slothful.input.k_blend for c in recorder.calls] == [0.1, 0.9]
    assert ["in_k_blend=0.1" in r.info for r in processed.cell_results] == [True, False]


# ----------------------------------------------------------------------------------- backends

def specs_present(*names):
    return lambda name: object() if name in names else None


def test_detect_picks_the_backend_by_import():
    assert "AUTOMATIC1111" in sloth_backend.detect(specs_present()).name
    assert "ldm_patched" in sloth_backend.detect(specs_present("ldm_patched", "modules_forge", "backend")).name
    forge_main = sloth_backend.detect(specs_present("backend", "modules_forge"))
    assert type(forge_main).__name__ == "ForgeMainBackend" and forge_main.supported and forge_main.ui_note == ""
    assert "AUTOMATIC1111" in sloth_backend.detect(specs_present("backend")).name  # an unrelated `backend`


UNSUPPORTED = "Sloth cannot patch this WebUI. Nothing will be patched."


def test_an_unsupported_backend_says_so_in_the_ui_and_writes_no_method_keys(webui):
    script = scripts.scripts_txt2img.script("Sloth")
    script.backend = sloth_backend.UnsupportedBackend("Some WebUI", UNSUPPORTED)
    with gr.Blocks() as blocks:
        script.ui(False)
    notes = [c.value for c in blocks.blocks.values() if c.elem_id == "script_txt2img_sloth_note"]
    assert len(notes) == 1 and UNSUPPORTED in notes[0]
    processed = standin.run(txt2img(sloth_args(SLOTHFUL)))
    params = params_of(processed)
    assert params[infotext.NOTES_KEY] == UNSUPPORTED
    assert not set(params) & set(infotext.all_keys())  # only the note: no settings that did not run


# ----------------------------------------------------------------------------------- labels

def test_every_control_has_its_own_ui_config_key_in_each_tab(webui):
    """Issue 10 item 12, seen in the real A1111 1.10.1: 45 distinct Sloth keys for 59 controls.
    modules/ui_loadsave.py add_block keys a component by f"{tab}/{label}", add_component prefixes
    customscript/<file>/ for the controls ui() returned, and component_mapping keeps only the
    first component of a key (the stand-in's ui_loadsave mirrors this), so a repeated label
    saves one control's default and applies it to the other too."""
    from modules import ui

    for tab, runner in (("txt2img", scripts.scripts_txt2img), ("img2img", scripts.scripts_img2img)):
        controls = [c for c in runner.script("Sloth").controls if c.label]
        keys = {k: c for k, c in ui.loadsave.component_mapping.items() if k.startswith(f"customscript/sloth.py/{tab}/")}
        assert len(controls) == len(script_args.arg_names()) - 1  # every control but the hidden problems box
        assert len(keys) == len(controls) and {id(c) for c in keys.values()} == {id(c) for c in controls}
        ours = [k for k in ui.loadsave.ui_settings if f"/{tab}/" in k and "Preset name" in k]
        assert ours == []  # the accordion's own buttons and name box save nothing (and collide with nothing)


def test_labels_and_axis_names_read_well():
    """No repeated word ("Tile tile size"), no unexplained abbreviation ("NSA"); the control and
    its X/Y/Z axis use the same words."""
    from lib_sloth.webui import labels

    for spec in SPECS:
        text = labels.label(spec.path)
        words = text.lower().split()
        assert all(a != b for a, b in zip(words, words[1:])), text
        assert "NSA" not in text and "NSA" not in labels.xyz_label(spec.path)
        if not spec.path.endswith(".enabled"):
            assert labels.xyz_label(spec.path) == f"{labels.XYZ_PREFIX} {text}"
    every = [labels.label(s.path) for s in SPECS] + [labels.xyz_label(s.path) for s in SPECS]
    assert len(set(every)) == len(every)
