"""User presets: save, overwrite, delete; a broken file is reported and ignored, never fatal."""
import json
import os

import pytest

from lib_sloth import user_presets
from lib_sloth.presets import preset
from lib_sloth.settings import SlothSettings, settings_from_dict, to_dict


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "user_presets.json")


def test_missing_file_is_an_empty_list(path):
    assert user_presets.load(path) == ({}, "")


def test_save_then_load_gives_the_same_settings(path):
    mine = settings_from_dict({"sag": {"enabled": True, "scale": 1.25}})
    presets, message = user_presets.save(path, "  crisp  ", mine)
    assert presets == {"crisp": mine} and "saved preset 'crisp'" in message
    assert user_presets.load(path) == ({"crisp": mine}, "")
    stored = json.load(open(path, encoding="utf-8"))
    assert stored == {"version": 1, "presets": {"crisp": to_dict(mine)}}  # every setting, not a diff


def test_save_with_the_same_name_overwrites(path):
    user_presets.save(path, "mine", preset("speed"))
    presets, message = user_presets.save(path, "mine", preset("detail"))
    assert presets == {"mine": preset("detail")} and "overwrote" in message


def test_delete_removes_only_that_preset(path):
    user_presets.save(path, "a", preset("speed"))
    user_presets.save(path, "b", preset("detail"))
    presets, message = user_presets.delete(path, "a")
    assert presets == {"b": preset("detail")} and "deleted" in message
    presets, message = user_presets.delete(path, "a")
    assert presets == {"b": preset("detail")} and "no user preset named 'a'" in message


@pytest.mark.parametrize("name, fragment", [("", "type a name"), ("speed", "built-in"), ("x" * 65, "at most 64"),
                                            ("two\nlines", "line breaks")])
def test_bad_names_are_refused_and_nothing_is_written(path, name, fragment):
    presets, message = user_presets.save(path, name, SlothSettings())
    assert presets == {} and fragment in message and not os.path.exists(path)


def test_builtin_presets_cannot_be_deleted(path):
    assert "built-in" in user_presets.delete(path, "detail")[1]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 7, "presets": {}}', "\xff\xfe"])
def test_corrupt_file_is_reported_and_ignored(path, content):
    with open(path, "w", encoding="latin-1") as f:
        f.write(content)
    presets, message = user_presets.load(path)
    assert presets == {} and "could not read user presets" in message and "user_presets.json" in message
    assert os.path.dirname(path) not in message  # the accordion shows it to every browser user


def test_saving_over_a_corrupt_file_keeps_the_old_one_aside(path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("{oops")
    presets, message = user_presets.save(path, "fresh", preset("speed"))
    assert presets == {"fresh": preset("speed")} and "user_presets.json.corrupt" in message
    assert os.path.dirname(path) not in message
    assert open(path + ".corrupt", encoding="utf-8").read() == "{oops"
    assert user_presets.load(path) == ({"fresh": preset("speed")}, "")


def test_a_preset_that_no_longer_validates_is_skipped_with_its_name(path):
    good = to_dict(preset("speed"))
    data = {"version": 1, "presets": {"good": good, "old": {"slothful": {"stride": 2}}, "odd": 5}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    presets, message = user_presets.load(path)
    assert presets == {"good": preset("speed")}
    assert "'old'" in message and "slothful.stride" in message and "'odd'" in message


def test_messages_name_the_file_relative_to_the_extension_folder_never_by_its_absolute_path(tmp_path):
    assert user_presets.shown(os.path.join(user_presets.EXTENSION_ROOT, "user_presets.json")) == "user_presets.json"
    assert user_presets.shown(os.path.join(user_presets.EXTENSION_ROOT, "a", "p.json")) == os.path.join("a", "p.json")
    assert user_presets.shown(str(tmp_path / "user_presets.json")) == "user_presets.json"
    unwritable = str(tmp_path / "no such folder" / "user_presets.json")  # an OSError's text names the file
    _, message = user_presets.save(unwritable, "mine", preset("speed"))
    assert "could not write user presets to user_presets.json" in message and str(tmp_path) not in message
