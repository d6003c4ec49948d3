"""Settings: the defaults and ranges the issue fixes, validation that names the field, presets."""
import dataclasses

import pytest

from lib_sloth.agentsd import AgentPhase
from lib_sloth.fields import SettingsError
from lib_sloth.presets import PRESETS, preset
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict, to_dict, to_flat
from lib_sloth.slothful import PoolBlock


def test_defaults_are_the_published_ones():
    s = SlothSettings()
    assert (s.slothful.peak_time, s.slothful.time_decay, s.slothful.keep_middle) == (0.4, 2.0, True)
    assert (s.slothful.input.slothful, s.slothful.output.slothful) == (6.0, 4.0)
    assert s.slothful.input.mode == "2D_AVG" and s.slothful.input.depth_decay == 2.0
    assert (s.tile.tile_size, s.tile.global_ratio, s.tile.max_depth) == (32, 0.5, 2)
    n = s.nearsighted
    assert (n.base_tile_size, n.peak_tile_size, n.base_global_ratio, n.peak_global_ratio) == (24, 32, 0.2, 0.8)
    assert (s.agentsd.early.sx, s.agentsd.early.ratio, s.agentsd.early.agent_ratio) == (4, 0.4, 0.95)
    assert (s.agentsd.late.sx, s.agentsd.late.agent_ratio, s.agentsd.switch_at) == (2, 0.5, 0.4)
    assert (s.sag.scale, s.sag.blur_sigma, s.sag.threshold) == (0.5, 2.0, 1.0)


def test_default_settings_are_inactive():
    assert not SlothSettings().active


@pytest.mark.parametrize("data, field, fragment", [
    ({"slothful": {"input": {"k_blend": 1.5}}}, "slothful.input.k_blend", "[0.0, 1.0]"),
    ({"tile.tile_size": 8}, "tile.tile_size", "[16, 64]"),
    ({"tile.tile_size": 20.5}, "tile.tile_size", "whole number"),
    ({"slothful.output.mode": "3D_AVG"}, "slothful.output.mode", "2D_MAX"),
    ({"sag.scale": float("nan")}, "sag.scale", "[-2.0, 5.0]"),
    ({"nearsighted.max_depth": 4}, "nearsighted.max_depth", "[1, 3]"),
    ({"agentsd.max_downsample": 3}, "agentsd.max_downsample", "[1, 2, 4, 8]"),
    ({"slothful.enabled": "yes"}, "slothful.enabled", "true or false"),
])
def test_bad_value_names_field_and_range(data, field, fragment):
    with pytest.raises(SettingsError) as err:
        settings_from_dict(data)
    assert str(err.value).startswith(field)
    assert fragment in str(err.value)


def test_unknown_key_is_refused():
    with pytest.raises(SettingsError, match="slothful.input.stride"):
        settings_from_dict({"slothful": {"input": {"stride": 2}}})


def test_two_rewrites_of_the_same_layers_are_refused():
    with pytest.raises(SettingsError, match="enable only one"):
        settings_from_dict({"slothful.enabled": True, "tile.enabled": True})


def test_agentsd_with_tiling_is_refused_with_reason():
    with pytest.raises(SettingsError, match="token grid"):
        settings_from_dict({"agentsd.enabled": True, "nearsighted.enabled": True})


def test_merge_ratio_is_capped_by_cell_size():
    with pytest.raises(SettingsError, match="1 - 1/"):
        AgentPhase(sx=2, sy=2, ratio=0.8)


def test_direct_construction_is_validated_too():
    with pytest.raises(SettingsError, match="slothful"):
        PoolBlock(slothful=-1)


def test_strings_and_ints_from_ui_are_coerced():
    s = settings_from_dict({"tile.enabled": "true", "tile.tile_size": 40.0, "tile.global_ratio": "0.25",
                            "agentsd.max_downsample": "2"})
    assert s.tile.enabled is True and s.tile.tile_size == 40 and s.tile.global_ratio == 0.25
    assert s.agentsd.max_downsample == 2


def test_flat_and_nested_round_trip():
    s = settings_from_dict({"nearsighted": {"enabled": True, "input": {"k_blend": 0.3}}, "sag.scale": 1.0})
    assert settings_from_dict(to_flat(s)) == s
    assert settings_from_dict(to_dict(s)) == s


def test_base_settings_are_kept_for_missing_keys():
    base = settings_from_dict({"slothful.enabled": True, "slothful.peak_time": 0.7})
    s = settings_from_dict({"slothful.time_decay": 1.0}, base=base)
    assert s.slothful.enabled and s.slothful.peak_time == 0.7 and s.slothful.time_decay == 1.0


def test_every_leaf_has_range_or_choices_and_hint():
    specs = list(iter_fields())
    assert len({s.path for s in specs}) == len(specs) == len(to_flat(SlothSettings()))
    for spec in specs:
        assert spec.hint, spec.path
        if spec.kind in ("int", "float"):
            assert spec.lo <= spec.default <= spec.hi, spec.path
        if spec.kind == "choice":
            assert spec.default in spec.choices


def test_nested_block_defaults_come_from_instances():
    specs = {s.path: s for s in iter_fields()}
    assert specs["slothful.input.slothful"].default == 6.0
    assert specs["slothful.output.slothful"].default == 4.0


def test_presets_exist_and_only_off_is_neutral():
    assert {"off", "detail", "speed"} <= set(PRESETS)
    for name in PRESETS:
        assert preset(name).active == (name != "off"), name


def test_unknown_preset_lists_choices():
    with pytest.raises(SettingsError, match="detail"):
        preset("turbo")


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SlothSettings().sag.scale = 2.0  # type: ignore[misc]
