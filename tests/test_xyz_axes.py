"""X/Y/Z axes in the A1111 stand-in: when they are registered, what an axis switches on, and
what its confirm step refuses (issue 10 item 14).

Facts mirrored (A1111 1.10.1):
* scripts/xyz_grid.py ``Script.ui`` (line 420 of the 1.10.1 tree) copies ``axis_options`` into
  ``self.current_axis_options``; ``run`` indexes that copy (the X/Y/Z type dropdowns are
  ``type="index"``), so an axis added after ``ui()`` can never be chosen, from the UI or the API.
* webui.py ``webui()`` runs ``script_callbacks.before_ui_callback()`` and then ``ui.create_ui()``;
  ``api_only()`` (``--nowebui``) calls ``create_api`` first, whose ``Api.__init__``
  (modules/api/api.py) calls ``ui.create_ui()`` because no runner has scripts yet, and runs
  ``before_ui_callback()`` only afterwards.
* modules/scripts.py ``list_scripts`` orders the WebUI's own scripts/ (xyz_grid.py) before every
  extension's, and ``load_scripts`` registers each module's Script classes in ``scripts_data``
  right after importing it: when our Script file is imported, the xyz module is already there.
* ``run`` calls ``opt.confirm(p, valslist)`` for each axis before the first cell (line 613).
"""
import os
import sys

import pytest

from lib_sloth.webui.job import job_of, new_job
from lib_sloth import infotext
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict
from lib_sloth.webui import args as script_args
from lib_sloth.webui import backend as sloth_backend
from lib_sloth.webui import labels, xyz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN_ROOT = os.path.join(ROOT, "tests", "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

import standin  # noqa: E402
import standin_sd_model  # noqa: E402
from modules import infotext_utils, scripts  # noqa: E402

OUR_LABELS = [xyz.ENABLED_LABEL, xyz.PRESET_LABEL, *(labels.xyz_label(s.path) for s in iter_fields())]


class RecordingBackend(sloth_backend.Backend):
    name = "recording"

    def __init__(self):
        self.calls = []

    def attach(self, p, settings, seed):
        self.calls.append(settings)
        return sloth_backend.PassNotes()


def start(mode, tmp_path, monkeypatch=None, late_only=False):
    standin.reset()
    standin.use_model(standin_sd_model.make_model("sd1", tokens=4, context_dim=8, echo=True))
    if late_only:  # the first version: axes only from the before_ui callback
        monkeypatch.setattr(xyz, "register_if_loaded", lambda presets_path: False)
    standin.load_scripts([ROOT])
    module = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "sloth.py")
    module.Script.presets_path = str(tmp_path / "user_presets.json")
    if mode == "ui":
        standin.start_ui()
    else:
        standin.start_api_only()
    recorder = RecordingBackend()
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        runner.script("Sloth").backend = recorder
    return recorder


@pytest.fixture(autouse=True)
def clean_standin():
    yield
    standin.reset()


def offered(runner):
    return [o.label for o in runner.script("X/Y/Z plot").current_axis_options]


@pytest.mark.parametrize("mode", ["ui", "api_only"])
def test_both_start_modes_offer_every_sloth_axis_in_both_tabs(tmp_path, mode):
    start(mode, tmp_path)
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        seen = offered(runner)
        assert [label for label in seen if label.startswith(labels.XYZ_PREFIX)] == OUR_LABELS
        assert len(seen) == len(set(seen))  # before_ui's second registration added nothing


def test_the_stand_in_reproduces_the_api_only_miss_of_a_before_ui_registration(tmp_path, monkeypatch):
    """Seen in the real A1111 1.10.1 with --nowebui: the X/Y/Z script offered none of ours."""
    start("api_only", tmp_path, monkeypatch, late_only=True)
    assert not any(label.startswith(labels.XYZ_PREFIX) for label in offered(scripts.scripts_txt2img))
    assert xyz.ENABLED_LABEL in [o.label for o in standin.xyz_grid_module().axis_options]  # added, too late


def xyz_args(runner, label, values, base_settings=None, *, csv_mode=True):
    """The script args of a txt2img job that runs X/Y/Z with one axis (what the API's
    script_name / script_args fields produce: the selectable script's index, then its args)."""
    xyz_script = runner.script("X/Y/Z plot")
    base = list(standin.script_args_for(runner, "Sloth", script_args.to_args(base_settings or SlothSettings(), False)))
    base[0] = runner.selectable_scripts.index(xyz_script) + 1
    own = [offered(runner).index(label), values, None, 0, "", None, 0, "", None,
           True, False, False, False, False, False, False, 0, csv_mode]
    return standin.script_args_for(runner, "X/Y/Z plot", own, base=base)


def run_grid(runner, label, values, base_settings=None):
    p = standin.txt2img(script_args=xyz_args(runner, label, values, base_settings), prompt="a cat", width=32,
                        height=32)
    p.steps, p.sampler_name = 2, "Euler"
    return standin.run(p)


def test_an_api_only_webui_can_sweep_a_sloth_setting(tmp_path):
    recorder = start("api_only", tmp_path)
    processed = run_grid(scripts.scripts_txt2img, "[Sloth] SAG scale", "0.5, 1.5")
    assert [s.sag.scale for s in recorder.calls] == [0.5, 1.5]
    assert all("Sloth SAG" in infotext_utils.parse_generation_parameters(r.info) for r in processed.cell_results)


def test_sweeping_a_methods_setting_enables_that_method_for_the_cell(tmp_path):
    """Issue 10 item 14b, seen in the real A1111: `[Sloth] Slothful input strength` = 2, 8 with
    Slothful unticked gave cells carrying only `Sloth: v1`, unchanged."""
    recorder = start("ui", tmp_path)
    label = labels.xyz_label("slothful.input.slothful")
    processed = run_grid(scripts.scripts_txt2img, label, "2, 8")
    assert [(s.slothful.enabled, s.slothful.input.slothful) for s in recorder.calls] == [(True, 2.0), (True, 8.0)]
    for cell, strength in zip(processed.cell_results, ("2", "8")):
        assert f"in_slothful={strength}" in infotext_utils.parse_generation_parameters(cell.info)["Sloth Slothful"]


def test_a_swept_setting_turns_the_ui_rival_off_like_its_enable_axis_does(tmp_path):
    recorder = start("ui", tmp_path)
    ui_tile = settings_from_dict({"tile.enabled": True})
    run_grid(scripts.scripts_txt2img, labels.xyz_label("nearsighted.peak_time"), "0.3", ui_tile)
    assert recorder.calls[0].nearsighted.enabled and not recorder.calls[0].tile.enabled


def test_an_enable_axis_swept_with_a_setting_axis_decides_alone(tmp_path):
    start("ui", tmp_path)
    module = standin.xyz_grid_module()
    p = standin.txt2img(prompt="a", width=32, height=32)
    p.script_args = standin.script_args_for(scripts.scripts_txt2img, "Sloth", script_args.to_args(SlothSettings(), False))
    cells = []
    for on in ("True", "False"):
        pc, processed = module.run_cell(p, [(module.axis_by_label(labels.xyz_label("slothful.enabled")), on),
                                            (module.axis_by_label(labels.xyz_label("slothful.input.slothful")), 8.0)])
        cells.append(job_of(pc).settings)
    assert cells[0].slothful.enabled and cells[0].slothful.input.slothful == 8.0
    assert not cells[1].slothful.enabled and not cells[1].active  # the grid's "off" column stays off


@pytest.mark.parametrize("label", [xyz.ENABLED_LABEL, labels.xyz_label("sag.enabled"), labels.xyz_label("upcast_attention")])
@pytest.mark.parametrize("bad", ["yes", "ture", "on", "2"])
def test_a_bad_value_on_a_switch_axis_is_refused_before_the_grid_runs(tmp_path, label, bad):
    """Issue 10 item 14c: xyz_grid's own boolean overrides map anything but "true" to False
    (scripts/xyz_grid.py apply_override, boolean=True); our switch axes refuse it instead."""
    recorder = start("ui", tmp_path)
    sag = settings_from_dict({"sag.enabled": True})
    with pytest.raises(RuntimeError, match="true or false"):
        run_grid(scripts.scripts_txt2img, label, f"True, {bad}", sag)
    assert recorder.calls == []
    run_grid(scripts.scripts_txt2img, label, "True, false, 1, 0", sag)  # the documented spellings pass
    assert len(recorder.calls) >= 2


def test_axis_values_reach_only_their_cell(tmp_path):
    start("ui", tmp_path)
    module = standin.xyz_grid_module()
    p = standin.txt2img(prompt="a", width=32, height=32)
    module.run_cell(p, [(module.axis_by_label(labels.xyz_label("sag.scale")), 1.5)])
    assert not any(k.startswith(script_args.ATTR_PREFIX) for k in vars(p))
    assert infotext.MAIN_KEY not in p.extra_generation_params
