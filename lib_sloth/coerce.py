"""Values as UIs and JSON hand them over -> the types the settings table expects.

Kept apart from the table (lib_sloth.fields) on purpose: this is the one place that decides how
loosely a value may be written ("true", "0.5", 40.0 for an int). The checks of range and type
happen afterwards, when the settings block is built.
"""
from __future__ import annotations

from .fields import FieldSpec, SettingsError


def coerce(spec: FieldSpec, value):
    """Accept what UIs and JSON hand over (ints for floats, 'true', '0.5') without hiding errors."""
    name = spec.path
    if spec.kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if spec.kind == "choice":
        if spec.integer and isinstance(value, (str, float)):
            try:
                as_float = float(value)
            except ValueError:
                raise SettingsError(name, f"={value!r} is not allowed: choose one of {list(spec.choices)}")
            return int(as_float) if as_float == int(as_float) else as_float
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(name, f"={value!r} is not allowed: expected a number in [{spec.lo}, {spec.hi}]")
    if spec.integer and isinstance(value, float) and value == int(value):
        value = int(value)
    if not spec.integer and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value
