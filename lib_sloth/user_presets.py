"""User presets: named settings saved by the user in one JSON file.

File format (version 1)::

    {"version": 1, "presets": {"my look": {"slothful": {"enabled": true, ...}, ...}}}

Each preset holds every setting (not only the changed ones), so it means the same thing after a
default changes. Nothing here is fatal: a file that cannot be read or parsed, or a preset that
no longer validates, is skipped and described in the returned message. Saving over an unreadable
file first moves it aside (``<file>.corrupt``) so the user's data is never silently lost.
Every function returns ``(presets, message)``; ``message`` is "" when all went well.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Mapping

from . import values
from .fields import SettingsError
from .presets import PRESETS
from .settings import SlothSettings, settings_from_dict, to_dict

FILE_VERSION = 1
MAX_NAME_LENGTH = 64
MAX_REPORTED = 5  # skipped presets named in one message; a hostile file cannot flood the UI
EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Presets = dict[str, SlothSettings]


def load(path: str) -> tuple[Presets, str]:
    """The valid presets in `path` ({} when the file does not exist) and what was skipped."""
    data, problem = _read(path)
    if problem:
        return {}, problem
    presets, skipped = {}, []
    for name, raw in data.items():
        try:
            problem = check_name(name)
            if problem and name not in PRESETS:  # a built-in's name is shadowed, not broken
                raise SettingsError("", problem.removeprefix("Sloth: ").rstrip("."))
            if not isinstance(raw, Mapping):
                raise SettingsError("", f"expected an object of settings, got {type(raw).__name__}")
            presets[name] = settings_from_dict(raw)
        except SettingsError as err:
            skipped.append(f"{values.shorten(name)} ({err})")
    if len(skipped) > MAX_REPORTED:
        skipped[MAX_REPORTED:] = [f"and {len(skipped) - MAX_REPORTED} more"]
    message = f"Sloth: skipped user presets that are no longer valid in {shown(path)}: {'; '.join(skipped)}" if skipped else ""
    return presets, message


def save(path: str, name: str, settings: SlothSettings) -> tuple[Presets, str]:
    """Save (or overwrite) preset `name`."""
    name = name.strip() if isinstance(name, str) else name
    problem = check_name(name)
    if problem:
        presets, _ = load(path)
        return presets, problem
    data, read_problem = _read(path)
    notes = []
    if read_problem:
        notes.append(_move_aside(path, read_problem))
        data = {}
    overwritten = name in data
    data[name] = to_dict(settings)
    write_problem = _write(path, data)
    presets, load_problem = load(path)
    if write_problem:
        return presets, write_problem
    notes.append(f"Sloth: {'overwrote' if overwritten else 'saved'} preset {name!r}.")
    if load_problem:
        notes.append(load_problem)
    return presets, " ".join(notes)


def delete(path: str, name: str) -> tuple[Presets, str]:
    """Delete preset `name`; deleting a preset that does not exist is reported, not an error."""
    name = name.strip() if isinstance(name, str) else name
    data, problem = _read(path)
    if problem:
        return {}, problem
    if name in PRESETS:
        presets, _ = load(path)
        return presets, f"Sloth: {name!r} is a built-in preset and cannot be deleted."
    if name not in data:
        presets, _ = load(path)
        return presets, f"Sloth: there is no user preset named {name!r}."
    del data[name]
    write_problem = _write(path, data)
    presets, load_problem = load(path)
    return presets, write_problem or " ".join(filter(None, [f"Sloth: deleted preset {name!r}.", load_problem]))


def check_name(name) -> str:
    """'' when `name` can be used for a user preset, else why not."""
    if not isinstance(name, str) or not name:
        return "Sloth: type a name for the preset first."
    if name in PRESETS:
        return f"Sloth: {name!r} is a built-in preset; choose another name."
    if len(name) > MAX_NAME_LENGTH:
        return f"Sloth: preset names are at most {MAX_NAME_LENGTH} characters."
    if any(not ch.isprintable() for ch in name):
        return "Sloth: preset names cannot contain line breaks or control characters."
    return ""


def _read(path: str) -> tuple[dict, str]:
    """(name -> raw settings, problem); a missing file is an empty one, not a problem."""
    if not os.path.exists(path):
        return {}, ""
    why = ""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        why = _reason(err)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: [[[[...]]]]
        why = values.shorten(str(err), 120)
    else:
        if not isinstance(data, dict) or not isinstance(data.get("presets"), dict):
            why = 'expected {"version": 1, "presets": {...}}'
        elif data.get("version") != FILE_VERSION:
            why = f"unknown file version {data.get('version')!r}"
        else:
            return dict(data["presets"]), ""
    return {}, f"Sloth: could not read user presets from {shown(path)} ({why}); they are ignored until it is fixed."


def _write(path: str, presets: Mapping) -> str:
    """Write atomically (a crash never leaves half a file); '' or why it failed."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".sloth-presets-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": FILE_VERSION, "presets": dict(presets)}, f, indent=2, sort_keys=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        return f"Sloth: could not write user presets to {shown(path)} ({_reason(err)})."
    return ""


def _move_aside(path: str, problem: str) -> str:
    target, n = path + ".corrupt", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt{n}"
    try:
        os.replace(path, target)
    except OSError as err:
        return f"{problem} Could not move it aside ({_reason(err)})."
    return f"{problem} It was moved to {shown(target)} and a new file was started."


def shown(path: str) -> str:
    """The file as messages name it: relative to the extension folder (the accordion shows messages to
    every browser user, who need not learn where the server keeps its files), else its name alone."""
    full = os.path.abspath(path)
    if os.path.commonpath([full, EXTENSION_ROOT]) == EXTENSION_ROOT:
        return os.path.relpath(full, EXTENSION_ROOT)
    return os.path.basename(full)


def _reason(err: OSError) -> str:
    """An OSError without the file names its text would carry."""
    return err.strerror or type(err).__name__
