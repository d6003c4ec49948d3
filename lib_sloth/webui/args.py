"""The Script's arguments -> settings: the UI's positional args, the API's dict, X/Y/Z attributes.

Positional args are the values of ``ui()``'s controls, in the pinned, append-only order of
`lib_sloth.webui.positional` (`arg_names`): today's list, and every released one before it, keeps
parsing to the same settings; any other length is a `SettingsError` naming the allowed ones.

``preset`` is only a label there: the controls already hold the preset's values.
``paste_problems`` is a hidden text box: the API's ``infotext`` field fills it with what was
wrong in the pasted info text (see `lib_sloth.infotext.PasteKey`), so such a request fails
with a `SettingsError` instead of silently using defaults; a UI paste leaves it empty.

The API may instead pass one dict as ``args[0]``: ``{"enabled": true, "preset": "speed",
"sag.scale": 1.0, "slothful": {"input": {"k_blend": 0.3}}}`` -- dotted paths or nested dicts.
``enabled`` defaults to true (sending settings means "use them"); ``preset`` (built-in or user)
is the base the other values change.

X/Y/Z cells set attributes on their own copy of ``p`` (see `attr_for`); they win over both.
Any unknown name or bad value raises `SettingsError` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .. import methods, values
from ..fields import SettingsError
from ..presets import PRESETS, preset
from ..settings import SlothSettings, flatten, iter_fields, settings_from_dict, to_flat
from . import positional

SCRIPT_ARGS = ("enabled", "preset", "paste_problems")  # the positional args that are not settings

ATTR_PREFIX = "sloth__"
ATTR_ENABLED = ATTR_PREFIX + "enabled"  # X/Y/Z "[Sloth] Enabled": the cell's on/off
ATTR_FORCE_ON = ATTR_PREFIX + "force_on"  # any other Sloth axis: the cell runs with Sloth on
ATTR_PRESET = ATTR_PREFIX + "preset"  # "[Sloth] Preset": the cell starts from this preset, not the UI

UserPresets = Callable[[], Mapping[str, SlothSettings]]


def arg_names() -> list[str]:
    """The name of every positional arg, at its index (see `lib_sloth.webui.positional`)."""
    return positional.layout(spec.path for spec in iter_fields())


def arg_lengths() -> list[int]:
    """The lengths a positional list may have: a released UI's list, or this version's."""
    return positional.lengths(spec.path for spec in iter_fields())


def attr_for(path: str) -> str:
    """The attribute an X/Y/Z cell sets on its copy of p for a setting."""
    return ATTR_PREFIX + path.replace(".", "__")


def ui_value(spec, value):
    """A setting's value as its control holds it (choices are shown as strings)."""
    return str(value) if spec.kind == "choice" else value


def to_args(settings: SlothSettings, enabled: bool = True, preset_name: str | None = None) -> list:
    """The positional args that mean `settings`, at their indexes (`arg_names`)."""
    flat = to_flat(settings)
    named = {"enabled": enabled, "preset": preset_name, "paste_problems": "",
             **{spec.path: ui_value(spec, flat[spec.path]) for spec in iter_fields()}}
    return [named[name] for name in arg_names()]


def default_args() -> list:
    return to_args(SlothSettings(), enabled=False)


@dataclass(frozen=True)
class Request:
    """What one job asked for: settings is None when the extension is off."""

    enabled: bool
    settings: SlothSettings | None
    preset: str | None = None


def resolve(args: Sequence[Any], p=None, user_presets: UserPresets = dict) -> Request:
    """Settings for one job from the Script's args and the X/Y/Z attributes on `p`.

    Raises SettingsError (naming the field and its allowed values) when anything is wrong; an
    extension that is off is never validated, so stray UI values cannot spam errors.
    """
    enabled, preset_name, given, from_dict, problems = _parse_args(args)
    x_enabled = getattr(p, ATTR_ENABLED, None)
    if x_enabled is not None:
        enabled = _flag("enabled", x_enabled)
    elif getattr(p, ATTR_FORCE_ON, False):
        enabled = True
    if not enabled:
        return Request(False, None, preset_name)
    _check_length(args)
    if problems:
        raise SettingsError("", f"in the info text: {problems}")

    x_values = {spec.path: getattr(p, attr_for(spec.path)) for spec in iter_fields() if hasattr(p, attr_for(spec.path))}
    x_preset = getattr(p, ATTR_PRESET, None)
    base = SlothSettings()
    if x_preset is not None:
        preset_name, given = x_preset, {}
        base = find_preset(x_preset, user_presets)
    elif from_dict and preset_name is not None:
        base = find_preset(preset_name, user_presets)

    flat = to_flat(settings_from_dict(given, base=base)) if given else to_flat(base)
    flat.update(x_values)
    implied = dict.fromkeys(implied_enables(x_values), True)  # sweeping a method's setting means using that method
    flat.update(implied)
    for path, value in {**x_values, **implied}.items():
        if path in method_enable_paths() and _flag(path, value):  # a method turned on turns its rivals off
            flat.update({other: False for other in conflicting_enables(path) if other not in x_values})
    return Request(True, settings_from_dict(flat), preset_name)


def implied_enables(x_values: Mapping[str, Any]) -> list[str]:
    """The enables of the methods whose settings an X/Y/Z cell sets, unless the cell sets that
    enable itself (then the enable axis decides, e.g. a grid of on/off x strength)."""
    out = []
    for path in x_values:
        method, dot, _ = path.partition(".")
        enable = f"{method}.enabled"
        if dot and enable in method_enable_paths() and enable not in x_values and enable not in out:
            out.append(enable)
    return out


def find_preset(name: str, user_presets: UserPresets = dict) -> SlothSettings:
    if not isinstance(name, str):
        raise values.refuse("preset", name, "expected a preset name")
    if name in PRESETS:
        return preset(name)
    users = user_presets()
    if name in users:
        return users[name]
    raise unknown_preset(name, [*PRESETS, *users])


def unknown_preset(name: str, known: list[str]) -> SettingsError:
    return SettingsError("preset", f"={values.shorten(name)} is not a preset; choose one of {known}")


def method_enable_paths() -> list[str]:
    return [f"{name}.enabled" for name in methods.names()]


def conflicting_enables(path: str) -> list[str]:
    """The other method enables that the method table refuses together with `path` (e.g. two rewrites)."""
    return [f"{name}.enabled" for name in methods.rivals(path.split(".")[0])]


def _parse_args(args: Sequence[Any]) -> tuple[bool, str | None, dict[str, Any], bool, str]:
    """(enabled, preset, path -> value, came as a dict, problems of a pasted info text)."""
    args = list(args or ())
    if args and isinstance(args[0], Mapping):
        flat = flatten(args[0])
        enabled = _flag("enabled", flat.pop("enabled", True))
        preset_name = flat.pop("preset", None)
        if preset_name is not None and not isinstance(preset_name, str):
            raise values.refuse("preset", preset_name, "expected a preset name")
        return enabled, preset_name, flat, True, ""
    if not args:
        return False, None, {}, False, ""
    named = dict(zip(arg_names(), args))  # a short list is checked once the extension is on
    enabled = _flag("enabled", named.pop("enabled"))
    preset_name = named.pop("preset", None)
    preset_name = preset_name if isinstance(preset_name, str) and preset_name else None
    problems = named.pop("paste_problems", "")
    given = {path: value for path, value in named.items() if value is not None}
    return enabled, preset_name, given, False, problems if isinstance(problems, str) else ""


def _check_length(args: Sequence[Any]) -> None:
    """A positional list must be a released UI's list or this version's (see `arg_lengths`):
    anything else would put values under the wrong names."""
    args = list(args or ())
    if not args or isinstance(args[0], Mapping):
        return
    allowed = arg_lengths()
    if len(args) not in allowed:
        listed = " or ".join(map(str, allowed))
        raise SettingsError("", f"got {len(args)} positional args; send {listed} (the UI's list, in the order of "
                                f"this version or an earlier one), or one dict of named values")


def _flag(name: str, value) -> bool:
    return values.parse_bool(name, value)
