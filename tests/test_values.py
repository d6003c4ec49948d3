"""lib_sloth.values: the one parser behind the API, the info text, the presets file and X/Y/Z.

Issue 10 item 7: NaN, infinities and huge numbers used to escape as ValueError/OverflowError
(``int(nan)``, ``float(10**400)``, ``math.isfinite`` of a huge int). Here every entry point is
fed the same hostile values and must answer with a short SettingsError naming field, value and
range; the boolean spellings are the same in all of them.
"""
import json
import math

import pytest

from lib_sloth import infotext, user_presets, values
from lib_sloth.fields import SettingsError
from lib_sloth.nearsighted import TileSettings
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict
from lib_sloth.slothful import PoolBlock
from lib_sloth.webui import args as script_args
from lib_sloth.webui import xyz

SPECS = {s.path: s for s in iter_fields()}
HUGE = 10 ** 400  # an int no float can hold
HOSTILE = [float("nan"), float("inf"), -float("inf"), HUGE, -HUGE, "nan", "inf", "-Infinity", "1e999", "9" * 400,
           "x" * 10_000, [1, 2], {"a": 1}, None, b"1"]
FIELDS = ["tile.tile_size", "tile.global_ratio", "agentsd.max_downsample", "slothful.input.mode", "tile.enabled"]


def entry_points():
    """Each way a value reaches the settings: (name, fn(path, value)) raising SettingsError."""

    def api_dict(path, value):
        return script_args.resolve([{path: value}])

    def presets_file(path, value):
        return settings_from_dict(json.loads(json.dumps({path: value}, allow_nan=True)))

    def xyz_axis(path, value):
        return xyz._confirm(path)(None, [value])

    return [("api", api_dict), ("presets", presets_file), ("xyz", xyz_axis)]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: values.shorten(v, 12))
def test_hostile_values_give_a_short_settings_error_naming_field_value_and_range(field, value):
    spec = SPECS[field]
    with pytest.raises(SettingsError) as err:
        values.parse(spec, value)
    text = str(err.value)
    assert text.startswith(field + "=") and len(text) < 160
    allowed = str(list(spec.choices)) if spec.choices else ("true or false" if spec.kind == "bool" else f"[{spec.lo}, {spec.hi}]")
    assert allowed in text


@pytest.mark.parametrize("name, fn", entry_points())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), HUGE, "nan", "1e999"], ids=repr)
def test_every_entry_point_refuses_them_the_same_way(name, fn, value):
    """API dict (A1111 1.10.1 modules/api/api.py init_script_args copies "args" positionally, so
    args[0] is our dict), the presets file (Python's json reads NaN, Infinity and 1e999 -> inf),
    and an X/Y/Z axis's confirm step; X/Y/Z wraps the error in RuntimeError (its run() reports it)."""
    errors = (SettingsError, RuntimeError) if name == "xyz" else (SettingsError,)
    for field in ("tile.tile_size", "tile.global_ratio"):
        with pytest.raises(errors) as err:
            fn(field, value)
        assert field in str(err.value) and "[" in str(err.value)
        assert not isinstance(err.value, (OverflowError,)) and "cannot convert" not in str(err.value)


def test_direct_construction_refuses_huge_and_nan_without_overflow():
    for bad in (HUGE, float("nan"), float("inf")):
        with pytest.raises(SettingsError, match=r"tile_size=.* \[16, 64\]"):
            TileSettings(tile_size=bad)
        with pytest.raises(SettingsError, match="slothful"):
            PoolBlock(slothful=bad)


def test_a_long_bad_value_is_echoed_shortened():
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"sag.scale": "9" * 5000})
    assert len(str(err.value)) < 120 and "..." in str(err.value)


BOOL_SPELLINGS = [(True, True), (False, False), ("true", True), ("False", False), (" TRUE ", True), (1, True),
                  (0, False), ("1", True), ("0", False), (1.0, True)]
NOT_BOOL = ["on", "yes", "off", "no", 2, -1, 0.5, "", "truth", float("nan"), None, HUGE]


@pytest.mark.parametrize("value, meant", BOOL_SPELLINGS)
def test_the_same_boolean_spellings_everywhere(value, meant):
    """README "Values": true/false, "true"/"false" in any case, 1/0 and "1"/"0"; nothing else."""
    assert settings_from_dict({"tile.enabled": value}).tile.enabled is meant  # API dict, presets file
    assert script_args.resolve([{"enabled": value}]).enabled is meant  # the extension's own switch
    assert script_args.resolve([value, *script_args.default_args()[1:]]).enabled is meant  # the positional list
    text = value if isinstance(value, str) else str(int(value))  # how the info text and X/Y/Z spell it
    assert infotext.parse_value(SPECS["tile.enabled"], text) is meant
    xyz._confirm("tile.enabled")(None, [text])


@pytest.mark.parametrize("value", NOT_BOOL, ids=repr)
def test_other_boolean_spellings_are_refused_everywhere(value):
    with pytest.raises(SettingsError, match="tile.enabled=.*true or false"):
        settings_from_dict({"tile.enabled": value})
    with pytest.raises(SettingsError, match="enabled=.*true or false"):
        script_args.resolve([{"enabled": value}])
    assert infotext.parse_value(SPECS["tile.enabled"], str(value)) is None
    with pytest.raises(RuntimeError, match="true or false"):
        xyz._confirm("tile.enabled")(None, [str(value)])


def test_an_unknown_name_lists_the_few_closest_names():
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"slothful.input.kblend": 0.2})
    text = str(err.value)
    assert "did you mean slothful.input.k_blend" in text
    assert text.count("slothful.") <= 1 + values.CLOSEST and len(text) < 200
    with pytest.raises(SettingsError, match="did you mean nearsighted"):
        settings_from_dict({"nearsighted.peak_tile": 30})
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"q" * 5000: 1})
    assert len(str(err.value)) < 120


def test_a_name_closest_to_a_block_suggests_the_leaves_that_take_the_value_given_first():
    # seen in the real WebUIs: `slothfull.input` with a number suggested mode, v_blend, k_blend
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"slothfull.input": 6})
    assert "did you mean slothful.input.slothful," in str(err.value)
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"slothfull.input": "1d_max"})
    assert "did you mean slothful.input.mode," in str(err.value)
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"nearsighted.output": 0.5})  # 0.5 fits the blends, not the strength's lead
    assert "did you mean nearsighted.output.slothful, nearsighted.output.depth_decay, " \
           "nearsighted.output.k_blend?" in str(err.value)


def test_choices_accept_their_text_in_any_case_and_numbers_for_numeric_choices():
    s = settings_from_dict({"slothful.input.mode": "2d_max", "agentsd.max_downsample": "4"})
    assert s.slothful.input.mode == "2D_MAX" and s.agentsd.max_downsample == 4
    assert settings_from_dict({"agentsd.max_downsample": 2.0}).agentsd.max_downsample == 2


def test_hostile_presets_file_values_skip_only_that_preset(tmp_path):
    path = str(tmp_path / "user_presets.json")
    with open(path, "w", encoding="utf-8") as f:  # Python's json module writes (and reads) these
        f.write('{"version": 1, "presets": {"ok": {"sag": {"enabled": true}}, "nan": {"tile": {"tile_size": NaN}},'
                ' "inf": {"sag": {"scale": Infinity}}, "big": {"sag": {"scale": 1e999}},'
                ' "huge": {"tile": {"tile_size": ' + "9" * 500 + '}}}}')
    presets, message = user_presets.load(path)
    assert list(presets) == ["ok"] and presets["ok"].sag.enabled
    for name, field in [("nan", "tile.tile_size"), ("inf", "sag.scale"), ("big", "sag.scale"), ("huge", "tile.tile_size")]:
        assert f"'{name}' ({field}=" in message
    assert len(message) < 800


def test_a_deeply_nested_presets_file_is_reported_not_raised(tmp_path):
    path = str(tmp_path / "user_presets.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[" * 100_000 + "]" * 100_000)
    presets, message = user_presets.load(path)
    assert presets == {} and "could not read user presets" in message


def test_many_bad_presets_give_one_short_message(tmp_path):
    path = str(tmp_path / "user_presets.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "presets": {f"p{i}": {"sag": {"scale": 99}} for i in range(500)}}, f)
    presets, message = user_presets.load(path)
    assert presets == {} and "and 495 more" in message and len(message) < 1000


def test_parse_is_the_only_coercion(monkeypatch):
    """settings_from_dict, the info text and X/Y/Z all call values.parse (one parser)."""
    seen = []
    real = values.parse
    monkeypatch.setattr(values, "parse", lambda spec, value: seen.append(spec.path) or real(spec, value))
    settings_from_dict({"sag.scale": "1"})
    infotext.parse_value(SPECS["sag.scale"], "1")
    xyz._confirm("sag.scale")(None, [1.0])
    assert seen == ["sag.scale"] * 3
    assert math.isclose(SlothSettings().sag.scale, 0.5)
