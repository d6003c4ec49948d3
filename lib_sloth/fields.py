"""The field table: how a settings class declares its leaf settings, and how they are checked.

A settings block is a frozen dataclass deriving from `Validated`. Each leaf is a `setting(...)`
field whose metadata holds its range or choices and a one-line hint; a `nested(...)` field holds
another block (input / output, early / late). `walk_fields` lists every leaf as a `FieldSpec`
with its dotted path, so a range is written down exactly once and the UI, the API, the info text
and X/Y/Z all read the same table. Imports nothing of lib_sloth but `values`.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from . import values
from .values import SettingsError  # noqa: F401  (re-exported: callers import it from here)


class Validated:
    """Base of every settings block: its leaf values are checked against the table on creation."""

    def __post_init__(self):
        validate(self)


def setting(default, lo=None, hi=None, *, choices=None, hint="", integer=False):
    """A leaf setting: a number in [lo, hi] (whole if `integer`), one of `choices`, or a bool."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "hint": hint, "integer": integer}
    return field(default=default, metadata=meta)


def nested(factory, hint=""):
    """A block of settings inside a block (its own defaults come from `factory()`)."""
    return field(default_factory=factory, metadata={"hint": hint, "nested": True})


def validate(obj) -> None:
    """Raise SettingsError naming the first leaf of `obj` that is outside its range."""
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if meta.get("nested"):
            continue
        check_value(f.name, getattr(obj, f.name), isinstance(f.default, bool), meta)


def check_value(name: str, value, is_bool: bool, meta: Mapping[str, Any]) -> None:
    """Refuse (SettingsError) a value of the wrong type or outside its range. No coercion here:
    outside input is parsed by `values.parse` first (settings_from_dict)."""
    if is_bool:
        if not isinstance(value, bool):
            raise values.refuse(name, value, "expected true or false")
    elif meta.get("choices") is not None:
        if isinstance(value, bool) or value not in meta["choices"]:
            raise values.refuse(name, value, f"choose one of {list(meta['choices'])}")
    elif isinstance(value, (bool, str)) or not isinstance(value, numbers.Real):
        raise values.refuse(name, value, f"expected a number in {values.range_text(meta['lo'], meta['hi'])}")
    else:  # exact for huge ints, refuses NaN and infinities (no OverflowError)
        values.parse_number(name, value, meta["lo"], meta["hi"], integer=bool(meta.get("integer")))


@dataclass(frozen=True)
class FieldSpec:
    """One leaf setting as the UI / API / info text see it."""

    path: str  # dotted, e.g. "slothful.input.k_blend"
    default: Any
    lo: Any
    hi: Any
    choices: tuple | None
    integer: bool
    hint: str

    @property
    def kind(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if self.choices is not None:
            return "choice"
        return "int" if self.integer else "float"


def walk_fields(cls, prefix: str = "") -> tuple[FieldSpec, ...]:
    """Every leaf setting of the block class `cls`, paths prefixed by `prefix`, in declaration order."""
    return _field_table(cls, prefix)


@functools.lru_cache(maxsize=None)
def _field_table(cls, prefix: str) -> tuple:
    # The table is a pure function of the class: build it once (the UI and API read it often).
    return tuple(_walk(cls, prefix))


def _walk(cls, prefix: str) -> Iterator[FieldSpec]:
    defaults = cls()
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if f.metadata.get("nested"):
            sub_default = getattr(defaults, f.name)
            for spec in _walk(type(sub_default), path + "."):
                # a nested block may have its own defaults (output slothful 4): read the instance
                value = get_path(sub_default, spec.path[len(path) + 1:])
                yield dataclasses.replace(spec, default=value)
        else:
            m = f.metadata
            yield FieldSpec(path, getattr(defaults, f.name), m.get("lo"), m.get("hi"),
                            m.get("choices"), bool(m.get("integer")), m.get("hint", ""))


def get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@functools.lru_cache(maxsize=None)
def nested_type(cls, name: str):
    """The block class held by the nested field `name` of `cls`."""
    return type(getattr(cls(), name))


def build_block(cls, values: Mapping[str, Any], prefix: str = ""):
    """An instance of block `cls` from dotted path -> value (every leaf under `prefix` present)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if f.metadata.get("nested"):
            kwargs[f.name] = build_block(nested_type(cls, f.name), values, path + ".")
        else:
            kwargs[f.name] = values[path]
    try:
        return cls(**kwargs)
    except SettingsError as err:  # the nested block's own check: say where it sits
        raise err.under(prefix) from None


def block_to_flat(block) -> dict[str, Any]:
    """Dotted path (inside the block) -> value for every leaf of a block instance."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(block):
        value = getattr(block, f.name)
        if f.metadata.get("nested"):
            out.update({f"{f.name}.{k}": v for k, v in block_to_flat(value).items()})
        else:
            out[f.name] = value
    return out
