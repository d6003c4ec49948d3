"""The Script's positional args (README "API"): every released name keeps its index for good, a
released UI's list parses to the settings it meant, and new settings and methods only ever append.
"""
from dataclasses import replace

import pytest
from hypothesis import given, settings as hsettings

from lib_sloth import methods
from lib_sloth.fields import SettingsError
from lib_sloth.settings import iter_fields, settings_from_dict, to_flat
from lib_sloth.webui import args as script_args
from lib_sloth.webui import positional
from method_examples import VScaleSettings
from settings_strategies import random_settings

# Every pinned name -> its index, written out: a release's list must keep meaning what it meant.
# Add a generation's names here when they are pinned; never change a line.
PINNED = {
    # V1, the first release: 61 values
    "enabled": 0, "preset": 1, "slothful.enabled": 2, "slothful.peak_time": 3, "slothful.time_decay": 4,
    "slothful.keep_middle": 5, "slothful.input.mode": 6, "slothful.input.slothful": 7,
    "slothful.input.depth_decay": 8, "slothful.input.k_blend": 9, "slothful.input.v_blend": 10,
    "slothful.output.mode": 11, "slothful.output.slothful": 12, "slothful.output.depth_decay": 13,
    "slothful.output.k_blend": 14, "slothful.output.v_blend": 15, "tile.enabled": 16, "tile.tile_size": 17,
    "tile.global_ratio": 18, "tile.max_depth": 19, "nearsighted.enabled": 20, "nearsighted.max_depth": 21,
    "nearsighted.peak_time": 22, "nearsighted.time_decay": 23, "nearsighted.keep_middle": 24,
    "nearsighted.base_tile_size": 25, "nearsighted.peak_tile_size": 26, "nearsighted.base_global_ratio": 27,
    "nearsighted.peak_global_ratio": 28, "nearsighted.input.mode": 29, "nearsighted.input.slothful": 30,
    "nearsighted.input.depth_decay": 31, "nearsighted.input.k_blend": 32, "nearsighted.input.v_blend": 33,
    "nearsighted.output.mode": 34, "nearsighted.output.slothful": 35, "nearsighted.output.depth_decay": 36,
    "nearsighted.output.k_blend": 37, "nearsighted.output.v_blend": 38, "agentsd.enabled": 39,
    "agentsd.max_downsample": 40, "agentsd.switch_at": 41, "agentsd.use_rand": 42, "agentsd.k_scale2": 43,
    "agentsd.k_shortcut": 44, "agentsd.fp32": 45, "agentsd.early.sx": 46, "agentsd.early.sy": 47,
    "agentsd.early.ratio": 48, "agentsd.early.agent_ratio": 49, "agentsd.late.sx": 50, "agentsd.late.sy": 51,
    "agentsd.late.ratio": 52, "agentsd.late.agent_ratio": 53, "sag.enabled": 54, "sag.scale": 55,
    "sag.blur_sigma": 56, "sag.threshold": 57, "upcast_attention": 58, "show_maps": 59, "paste_problems": 60,
    # V2, the second release (SAG's window, PAG, SEG): 78 values
    "sag.start": 61, "sag.end": 62, "pag.enabled": 63, "pag.scale": 64, "pag.input_levels": 65, "pag.middle": 66,
    "pag.output_levels": 67, "pag.start": 68, "pag.end": 69, "seg.enabled": 70, "seg.scale": 71,
    "seg.input_levels": 72, "seg.middle": 73, "seg.output_levels": 74, "seg.start": 75, "seg.end": 76,
    "seg.blur_sigma": 77,
}
V1_LENGTH = 61
V2_LENGTH = 78


def _keep(settings, call):  # a per-layer method that never rewrites anything
    return None


LATER = methods.Method("later", VScaleSettings, "Later", "Later", "Sloth Later", _keep)
LATEST = methods.Method("latest", VScaleSettings, "Latest", "Latest", "Sloth Latest", _keep)


def released_list(settings, length=V1_LENGTH):
    """The positional list a released UI (the first `length` pinned names) sends for `settings`."""
    named = {"enabled": True, "preset": None, "paste_problems": "",
             **{s.path: script_args.ui_value(s, to_flat(settings)[s.path]) for s in iter_fields()}}
    names = sorted((name for name, index in PINNED.items() if index < length), key=PINNED.get)
    return [named[name] for name in names]


def only_released(settings, length=V1_LENGTH):
    """`settings` with every setting a released list of `length` cannot carry at its default."""
    return settings_from_dict({p: v for p, v in to_flat(settings).items() if PINNED.get(p, length) < length})


# ---- the pinned indexes ------------------------------------------------------------------------
def test_every_pinned_name_keeps_its_index():
    names = script_args.arg_names()
    assert {name: names.index(name) for name in PINNED} == PINNED
    assert positional.pinned() == sorted(PINNED, key=PINNED.get)


def test_the_first_release_sends_61_values_ending_in_the_paste_problems_box():
    assert positional.V1 == tuple(sorted(PINNED, key=PINNED.get)[:V1_LENGTH])
    assert positional.V1[-1] == "paste_problems" and len(positional.V1) == V1_LENGTH


def test_every_builtin_setting_is_pinned():
    """A built-in setting or method added since the last release must be pinned in the newest
    generation (lib_sloth/webui/positional.py) and in PINNED above, or the next one would move it."""
    unpinned = script_args.arg_names()[len(positional.pinned()):]
    assert unpinned == [], f"pin {unpinned} at the end of the newest generation and in PINNED"


def test_every_pinned_name_is_a_setting_or_one_of_the_scripts_own_args_once():
    pinned = positional.pinned()
    assert len(set(pinned)) == len(pinned)
    assert set(pinned) == {*script_args.SCRIPT_ARGS, *(s.path for s in iter_fields())}


# ---- parsing -----------------------------------------------------------------------------------
@hsettings(max_examples=25, deadline=None)
@given(random_settings())
def test_a_released_list_parses_to_the_settings_it_meant(settings):
    old = released_list(settings)
    assert script_args.to_args(settings)[:V1_LENGTH] == old  # today's UI sends it, as the release did
    assert script_args.resolve(old).settings == only_released(settings)


def test_a_released_list_gives_a_method_registered_later_its_defaults():
    used = {"sag.enabled": True, "sag.scale": 0.75, "tile.enabled": True, "show_maps": True}
    old = released_list(settings_from_dict(used))
    with methods.registered(LATER):
        resolved = script_args.resolve(old).settings
        assert resolved == settings_from_dict(used) and resolved.later == VScaleSettings()


def test_a_list_of_this_versions_length_parses_every_value():
    with methods.registered(LATER):
        used = settings_from_dict({"later.enabled": True, "later.scale": 0.5, "sag.enabled": True})
        args = script_args.to_args(used)
        assert len(args) == V2_LENGTH + 2 and script_args.arg_lengths() == [V1_LENGTH, V2_LENGTH, V2_LENGTH + 2]
        assert script_args.resolve(args).settings == used


@pytest.mark.parametrize("length", [1, 2, V1_LENGTH - 1, V1_LENGTH + 1, V2_LENGTH - 1, V2_LENGTH + 1,
                                    V2_LENGTH + 3])
def test_any_other_length_is_refused_naming_the_lengths_allowed(length):
    with methods.registered(LATER):
        args = (script_args.to_args(settings_from_dict({})) * 2)[:length]
        with pytest.raises(SettingsError, match=rf"^got {length} positional args; send 61 or 78 or 80 "):
            script_args.resolve(args)


def test_a_list_that_switches_sloth_off_is_never_checked():
    assert script_args.resolve([False]) == script_args.Request(False, None)
    assert script_args.resolve([]).enabled is False


# ---- appending ---------------------------------------------------------------------------------
def test_a_registered_method_appends_its_settings_and_moves_no_index():
    before = script_args.arg_names()
    with methods.registered(LATER):
        after_one = script_args.arg_names()
        with methods.registered(LATEST):
            after_two = script_args.arg_names()
    assert after_one == [*before, "later.enabled", "later.scale"]
    assert after_two == [*after_one, "latest.enabled", "latest.scale"]
    assert script_args.arg_names() == before


def test_a_setting_added_to_an_existing_method_moves_no_pinned_index(monkeypatch):
    """A new last field of SAG's settings class: the table lists it before upcast_attention, the
    positional list after everything pinned."""
    specs = list(iter_fields())
    later = replace(next(s for s in specs if s.path == "sag.scale"), path="sag.later")
    at = [s.path for s in specs].index("sag.end") + 1
    monkeypatch.setattr(script_args, "iter_fields", lambda: iter([*specs[:at], later, *specs[at:]]))
    assert script_args.arg_names() == [*positional.pinned(), "sag.later"]


def test_a_new_generation_pins_its_names_before_any_registered_method(monkeypatch):
    """The next release pins what it added (here a new last field of SAG's); a method registered at run
    time then comes after it, and the lists of both releases have a length that parses."""
    monkeypatch.setattr(positional, "GENERATIONS", (positional.V1, positional.V2, ("sag.later",)))
    with methods.registered(LATER):
        paths = [s.path for s in iter_fields()]
    paths.insert(paths.index("upcast_attention"), "sag.later")
    assert positional.layout(paths) == [*positional.V1, *positional.V2, "sag.later", "later.enabled",
                                        "later.scale"]
    assert positional.lengths(paths) == [V1_LENGTH, V2_LENGTH, V2_LENGTH + 1, V2_LENGTH + 3]
