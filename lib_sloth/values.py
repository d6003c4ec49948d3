"""The one parser for every value that reaches the settings from outside.

API args (the dict or the positional list), pasted info text, ``user_presets.json``, X/Y/Z axis
values and the UI's own controls all go through `parse`, so they accept the same spellings and
refuse the same values with the same message. Contract:

* booleans: ``true``/``false`` (JSON or Python), the strings ``"true"``/``"false"`` in any case,
  and ``1``/``0`` (number or string). Nothing else (``"on"``, ``"yes"``, ``2`` are refused).
* numbers: ints, floats and decimal strings (``"0.5"``, ``" 3 "``). NaN, infinities and numbers
  too large for a float are refused; ints are compared exactly, never converted first, so
  ``10**400`` is "out of range", not an OverflowError. A whole-number setting takes ``40`` or
  ``40.0`` but not ``40.5``.
* choices: the choice itself, its text in any case (``"2d_avg"``), or for numeric choices a
  number or numeric string equal to one.

Every refusal is a `SettingsError` whose message starts with the field, echoes the value
shortened to `MAX_ECHO` characters and states what is allowed. This module imports nothing
from lib_sloth, so every other module may use it.
"""
from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable

MAX_ECHO = 40  # characters of a bad value (or unknown name) repeated in a message
CLOSEST = 3  # how many known names an "unknown name" message suggests

TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


class SettingsError(ValueError):
    """A setting is unknown or outside its allowed range; the message starts with the field's path."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}{detail}")

    def under(self, prefix: str) -> "SettingsError":
        """The same error seen from an enclosing settings block."""
        return SettingsError(prefix + self.field, self.detail)


def shorten(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to `limit` characters (a hostile 1 MB string never reaches a log)."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails is still a bad value, not a crash
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def refuse(field: str, value: Any, allowed: str) -> SettingsError:
    """The error for a bad value: ``field=<value> is not allowed: <allowed>``."""
    return SettingsError(field, f"={shorten(value)} is not allowed: {allowed}")


def unknown(name: Any, known: Iterable[str], what: str = "setting", fits=None) -> SettingsError:
    """The error for an unknown name, suggesting the few closest known names (those `fits(name)`
    says could take the value that was given come first)."""
    text = name if isinstance(name, str) else repr(name)
    return SettingsError(shorten(text), f" is not a {what}; {suggestion(text, known, what, fits)}")


def suggestion(name: str, known: Iterable[str], what: str = "setting", fits=None) -> str:
    """"did you mean a, b?" with the few known names closest to `name`.

    A name closer to a block of settings than to any leaf (``slothfull.input``) gets that block's
    leaves, in table order; `fits` (known name -> bool) then moves the leaves that could take the
    given value to the front (a number: ``slothful.input.slothful`` before the mode choice).
    """
    known = list(known)
    close = []
    if len(name) <= 200:
        close = difflib.get_close_matches(name, known, n=len(known), cutoff=0.6)
        blocks = list(dict.fromkeys(k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)))
        block = difflib.get_close_matches(name, blocks, n=1, cutoff=0.8)
        if block and _likeness(name, block[0]) > max((_likeness(name, k) for k in close), default=0.0):
            close = [k for k in known if k.startswith(block[0] + ".")]
        if fits is not None:
            close.sort(key=lambda k: not fits(k))  # stable: closeness (or table order) within each group
    if not close:  # no near miss: names that share the first part, e.g. the same method
        head = name.split(".", 1)[0]
        close = [k for k in known if k.split(".", 1)[0] == head]
    close = close[:CLOSEST]
    return f"did you mean {', '.join(close)}?" if close else f"see the README for the {what} names"


def _likeness(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def parse_bool(field: str, value: Any) -> bool:
    """`value` as a boolean, spelled as the module docstring says, else SettingsError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value == 1 or value == 0:  # exact comparison, no conversion (NaN and huge ints fail here)
            return value == 1
    elif isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    raise refuse(field, value, "expected true or false (or 1 / 0)")


def range_text(lo, hi) -> str:
    return f"[{lo}, {hi}]"


def parse_number(field: str, value: Any, lo, hi, *, integer: bool) -> int | float:
    """`value` as an int (``integer``) or float within [lo, hi], else SettingsError."""
    allowed = f"expected {'a whole number' if integer else 'a number'} in {range_text(lo, hi)}"
    number = _real(value)
    if number is None:
        raise refuse(field, value, allowed)
    if isinstance(number, float) and not math.isfinite(number):
        raise refuse(field, value, allowed)
    if integer and isinstance(number, float) and not number.is_integer():
        raise refuse(field, value, allowed)
    if not lo <= number <= hi:  # int/float comparison is exact in Python: no overflow here
        raise SettingsError(field, f"={shorten(value)} is out of range: allowed {range_text(lo, hi)}")
    return int(number) if integer else float(number)


def parse_choice(field: str, value: Any, choices) -> Any:
    """The member of `choices` that `value` means, else SettingsError."""
    allowed = f"choose one of {list(choices)}"
    if isinstance(value, bool):
        raise refuse(field, value, allowed)
    for choice in choices:
        if isinstance(choice, str):
            if isinstance(value, str) and value.strip().lower() == choice.lower():
                return choice
        else:
            number = _real(value)
            if number is not None and number == choice:
                return choice
    raise refuse(field, value, allowed)


def parse(spec, value: Any) -> Any:
    """The typed, range-checked value of one setting.

    `spec` needs ``path``, ``kind`` ("bool", "choice", "int" or "float"), ``lo``, ``hi`` and
    ``choices`` (a `lib_sloth.settings.FieldSpec`).
    """
    if spec.kind == "bool":
        return parse_bool(spec.path, value)
    if spec.kind == "choice":
        return parse_choice(spec.path, value, spec.choices)
    return parse_number(spec.path, value, spec.lo, spec.hi, integer=spec.kind == "int")


def _real(value: Any) -> int | float | None:
    """An int or float for a number or numeric string; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except (OverflowError, ValueError):
            return None
    if isinstance(value, str) and len(value) <= 100:  # float() of a huge digit string is slow
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
