"""X/Y/Z plot axes: one per setting, plus "[Sloth] Enabled" and "[Sloth] Preset".

An axis value reaches the Script as an attribute on the cell's own copy of ``p`` (names in
`lib_sloth.webui.args`), never through ``p.script_args``; every axis except "Enabled" also turns
Sloth on for its cells, and an axis on a method's setting also turns that method on (unless its
own enable axis is swept too). Every axis refuses bad values in its confirm step, before the grid
runs: switches take the spellings of `lib_sloth.values`.

When: the xyz script copies its axis list in its ``ui()`` (A1111 1.10.1 scripts/xyz_grid.py
``Script.ui``). With the full UI, webui.py runs ``before_ui`` callbacks before building the UI;
started with ``--nowebui``, ``create_api`` builds the UI first (modules/api/api.py
``Api.__init__`` calls ``ui.create_ui()``) and ``before_ui`` runs after. So the Script file
registers the axes as soon as it is imported (xyz_grid.py, a WebUI base script, is loaded before
extensions' scripts), and again from ``before_ui`` for forks that load it later; adding is
idempotent per xyz module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from .. import user_presets, values
from ..fields import SettingsError
from ..presets import PRESETS
from ..settings import iter_fields, settings_from_dict
from . import args as script_args
from .labels import XYZ_PREFIX, xyz_label

XYZ_MODULE_NAMES = ("xyz_grid.py", "scripts.xyz_grid")  # A1111 < 1.9 and >= 1.9 / Forge
ENABLED_LABEL = f"{XYZ_PREFIX} Enabled"
PRESET_LABEL = f"{XYZ_PREFIX} Preset"
BOOL_CHOICES = ("True", "False")

PresetsPath = Union[str, Callable[[], str]]  # a callable is read when needed (tests move the file)


@dataclass(frozen=True)
class Axis:
    """What becomes one ``xyz_grid.AxisOption``."""

    label: str
    type: type
    apply: Callable[[Any, Any, list], None]
    confirm: Callable[[Any, list], None] | None = None
    choices: Callable[[], list[str]] | None = None


def find_xyz_module(scripts_data):
    """The xyz_grid module among ``modules.scripts.scripts_data``, or None."""
    for data in scripts_data:
        if data.script_class.__module__ in XYZ_MODULE_NAMES:
            return data.module
    return None


def axes(presets_path: PresetsPath) -> list[Axis]:
    out = [Axis(ENABLED_LABEL, str, _apply_enabled, confirm=_confirm_switch(ENABLED_LABEL), choices=lambda: list(BOOL_CHOICES)),
           Axis(PRESET_LABEL, str, _apply_preset, confirm=_confirm_preset(presets_path),
                choices=lambda: _preset_names(presets_path))]
    for spec in iter_fields():
        if spec.kind == "bool":
            out.append(Axis(xyz_label(spec.path), str, _apply_setting(spec.path), _confirm(spec.path),
                            lambda: list(BOOL_CHOICES)))
        elif spec.kind == "choice":
            out.append(Axis(xyz_label(spec.path), str, _apply_setting(spec.path), _confirm(spec.path),
                            lambda spec=spec: [str(c) for c in spec.choices]))
        else:
            out.append(Axis(xyz_label(spec.path), int if spec.integer else float, _apply_setting(spec.path),
                            _confirm(spec.path)))
    return out


def register(xyz_module, presets_path: PresetsPath) -> int:
    """Add our axes to `xyz_module.axis_options` unless they are there; returns how many were added."""
    options = xyz_module.axis_options
    present = {getattr(o, "label", None) for o in options}
    added = 0
    for axis in axes(presets_path):
        if axis.label in present:
            continue
        options.append(xyz_module.AxisOption(axis.label, axis.type, axis.apply, confirm=axis.confirm,
                                             choices=axis.choices))
        added += 1
    return added


def register_if_loaded(presets_path: PresetsPath) -> bool:
    """Add the axes now if the xyz script is already loaded (from the Script file's import)."""
    from modules import scripts  # WebUI import, only when the WebUI runs us

    module = find_xyz_module(scripts.scripts_data)
    if module is not None:
        register(module, presets_path)
    return module is not None


def before_ui_callback(presets_path: PresetsPath) -> Callable[[], None]:
    """The ``on_before_ui`` callback that finds the xyz script and adds the axes."""

    def add_sloth_axes():
        from modules import scripts  # WebUI import, only when the WebUI calls us

        module = find_xyz_module(scripts.scripts_data)
        if module is None:
            print("[Sloth] X/Y/Z plot script not found; no Sloth axes were added")
            return
        register(module, presets_path)

    return add_sloth_axes


# ---------------------------------------------------------------------------------------------
def _apply_enabled(p, x, xs):
    setattr(p, script_args.ATTR_ENABLED, values.parse_bool("enabled", x))


def _confirm_switch(label: str):
    """Refuse a switch value that is not true/false (a typo must not silently mean False)."""

    def confirm(p, xs):
        for x in xs:
            try:
                values.parse_bool("enabled", x)
            except SettingsError as err:
                raise RuntimeError(f"{label}: {err}") from None

    return confirm


def _apply_preset(p, x, xs):
    setattr(p, script_args.ATTR_PRESET, x)
    setattr(p, script_args.ATTR_FORCE_ON, True)


def _apply_setting(path: str):
    attr = script_args.attr_for(path)

    def apply(p, x, xs):
        setattr(p, attr, x)
        setattr(p, script_args.ATTR_FORCE_ON, True)

    return apply


def _confirm(path: str):
    """Refuse values outside the setting's range before the grid starts (not mid-grid)."""

    def confirm(p, xs):
        for x in xs:
            try:
                settings_from_dict({path: x})
            except SettingsError as err:
                if err.field == path:  # rivals' or related settings' limits depend on the cell
                    raise RuntimeError(f"{xyz_label(path)}: {err}") from None

    return confirm


def _confirm_preset(presets_path: PresetsPath):
    def confirm(p, xs):
        known = _preset_names(presets_path)
        for x in xs:
            if x not in known:
                raise RuntimeError(f"{PRESET_LABEL}: {x!r} is not a preset; choose one of {known}")

    return confirm


def _preset_names(presets_path: PresetsPath) -> list[str]:
    users, _ = user_presets.load(presets_path() if callable(presets_path) else presets_path)
    return [*PRESETS, *(n for n in users if n not in PRESETS)]
