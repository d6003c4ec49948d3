"""Info text: the keys written under each image parse back, through the WebUI's parser, to the same settings."""
import os
import sys

import pytest
from hypothesis import given, settings as hsettings

from lib_sloth import infotext
from lib_sloth.presets import preset
from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict
from settings_strategies import pasted_subset, random_settings

STANDIN_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

from modules import infotext_utils  # noqa: E402  (the stand-in of modules/infotext_utils.py)

BASE = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1234, "Size": "512x512"}


def webui_infotext(extra: dict, prompt: str = "a cat, sitting") -> str:
    """The last lines of an image's info text, joined like processing.create_infotext does."""
    params = {**BASE, **extra}
    line = ", ".join(k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in params.items() if v is not None)
    return f"{prompt}\nNegative prompt: blurry\n{line}"


def roundtrip(settings: SlothSettings) -> dict:
    return infotext_utils.parse_generation_parameters(webui_infotext(infotext.to_params(settings)))


def test_every_key_matches_the_webui_key_pattern():
    for key in [*infotext.all_keys(), infotext.NOTES_KEY, infotext.ERROR_KEY]:
        assert infotext.KEY_PATTERN.fullmatch(key), key
        assert infotext_utils.re_param.fullmatch(f"{key}: x"), key


def test_every_setting_has_exactly_one_key_and_token():
    seen = set()
    for spec in iter_fields():
        where = (infotext.key_for(spec.path), infotext.token_for(spec.path))
        assert where not in seen, spec.path
        seen.add(where)
    assert infotext.token_for("slothful.input.k_blend") == "in_k_blend"
    assert infotext.token_for("agentsd.early.sx") == "early_sx"
    assert infotext.key_for("upcast_attention") == infotext.MAIN_KEY


def test_example_line_is_compact_and_needs_no_quoting():
    params = infotext.to_params(preset("soft"))
    assert list(params) == ["Sloth", "Sloth Slothful"]
    assert params["Sloth"] == "v1 upcast_attention=0"
    assert params["Sloth Slothful"].startswith("peak_time=0.4 time_decay=2 keep_middle=1 in_mode=2D_AVG in_slothful=6")
    assert "in_k_blend=0.4" in params["Sloth Slothful"] and "out_v_blend=0.3" in params["Sloth Slothful"]
    assert all(infotext_utils.quote(v) == v for v in params.values())


@hsettings(max_examples=40, deadline=None)
@given(random_settings())
def test_random_settings_survive_the_webui_parser(settings):
    read = infotext.read(roundtrip(settings))
    assert read == pasted_subset(settings)
    assert all(type(read[p]) is type(v) for p, v in pasted_subset(settings).items())


def test_only_enabled_methods_get_a_key():
    params = infotext.to_params(settings_from_dict({"sag.enabled": True, "nearsighted.enabled": True}))
    assert set(params) == {"Sloth", "Sloth NSA", "Sloth SAG"}
    assert infotext.to_params(SlothSettings()) == {"Sloth": "v1 upcast_attention=0"}


def test_info_text_without_our_keys_reads_as_off():
    params = infotext_utils.parse_generation_parameters(webui_infotext({}))
    assert infotext.read(params) is None and not infotext.is_enabled(params)
    assert infotext.paste_keys()["enabled"](params) is False
    assert infotext.paste_keys()["sag.scale"](params) is None


def test_absent_method_key_switches_that_method_off_and_leaves_its_controls():
    read = infotext.read(roundtrip(preset("detail")))
    assert read["tile.enabled"] is True and read["slothful.enabled"] is False and read["sag.enabled"] is False
    assert "slothful.peak_time" not in read and read["tile.tile_size"] == 32


def test_bad_tokens_are_skipped_not_fatal():
    params = {"Sloth": "v1 upcast_attention=maybe", "Sloth SAG": "scale=9 blur_sigma=abc threshold=0.5 junk nope=1"}
    read = infotext.read(params)
    assert read["sag.enabled"] is True and read["sag.threshold"] == 0.5
    assert "sag.scale" not in read and "sag.blur_sigma" not in read and "upcast_attention" not in read
    for key in infotext.paste_keys().values():
        key({"Sloth": object(), "Sloth Tile": None})  # never raises, whatever is pasted


def test_paste_key_is_a_label_and_a_paste_function():
    keys = infotext.paste_keys()
    assert keys["enabled"] == "Sloth" and keys["tile.enabled"] == "Sloth Tile"
    assert keys["slothful.input.k_blend"] == "Sloth Slothful in_k_blend"
    assert len(set(keys.values())) == len(keys)
    params = roundtrip(preset("soft"))
    assert keys["slothful.input.k_blend"](params) == 0.4 and keys["enabled"](params) is True


def test_version_is_read_from_the_main_key():
    assert infotext.version_of({"Sloth": "v1 upcast_attention=0"}) == 1
    assert infotext.version_of({"Sloth": "upcast_attention=0"}) is None
    assert infotext.version_of({}) is None


# A made-up format v0, to exercise the migration machinery before any old keys exist:
# it wrote "Sloth method: slothful" and "Sloth k blend: 0.3" (the input blocks' K blend).
def _v0_applies(params):
    return "Sloth method" in params


def _v0_upgrade(params):
    method = params.pop("Sloth method")
    k_blend = params.pop("Sloth k blend", "0")
    params["Sloth"] = "v1 upcast_attention=0"
    if method == "slothful":
        params["Sloth Slothful"] = f"in_k_blend={k_blend}"


V0 = infotext.Migration(to_version=1, applies=_v0_applies, upgrade=_v0_upgrade)


def test_old_keys_are_migrated_on_paste(monkeypatch):
    monkeypatch.setattr(infotext, "MIGRATIONS", (V0,))
    text = webui_infotext({"Sloth method": "slothful", "Sloth k blend": 0.3})
    params = infotext_utils.parse_generation_parameters(text)
    read = infotext.read(params)  # readers migrate a copy themselves (the API skips the pasted callback)
    assert read["slothful.enabled"] is True and read["slothful.input.k_blend"] == 0.3
    assert "Sloth method" in params  # ... without touching the caller's dict
    assert infotext.migrate(params) == ["upgraded Sloth info text to v1"]  # the pasted callback: in place
    assert "Sloth method" not in params and infotext.version_of(params) == 1
    assert infotext.migrate(params) == []  # idempotent


def test_migrations_run_oldest_first():
    order = []
    m2 = infotext.Migration(2, lambda p: infotext.version_of(p) == 1, lambda p: (order.append(2), p.update(Sloth="v2")))
    m1 = infotext.Migration(1, _v0_applies, lambda p: (order.append(1), _v0_upgrade(p)))
    params = {"Sloth method": "tile"}
    infotext.migrate(params, [m2, m1])
    assert order == [1, 2] and params == {"Sloth": "v2"}


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-7, 0.9375, 2.0, 0.0])
def test_floats_are_written_exactly(value):
    spec = next(s for s in iter_fields() if s.path == "sag.threshold")
    text = infotext.format_value(spec, value)
    assert "," not in text and ":" not in text
    assert infotext.parse_value(spec, text) == value
