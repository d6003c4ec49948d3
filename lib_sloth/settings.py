"""All settings of one job: every registered method's block plus the settings shared by all.

`SlothSettings` is built from the method table (lib_sloth.methods): ``settings.slothful`` is
the Slothful block, and so on for every method. It is frozen and validated on creation (each
block checks its own ranges; the table's conflicts are checked here), so a pass never sees
settings change or hold a bad value. `iter_fields` is the flat table the UI, the API, the info
text and X/Y/Z read; `settings_from_dict` / `to_flat` / `to_dict` convert to and from plain data.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from . import methods, values
from .fields import (FieldSpec, SettingsError, Validated, block_to_flat, build_block, setting, walk_fields)


@dataclass(frozen=True)
class SharedSettings(Validated):
    """The settings that belong to no method (their paths have no dot)."""

    upcast_attention: bool = setting(False, hint="Compute rewritten attention in fp32 (slower, avoids fp16 overflow)")
    show_maps: bool = setting(False, hint="Add images of what each method did (SAG mask, tiles, K/V budget) after "
                                          "the generated ones; changes no image")


class SlothSettings:
    """One block per registered method (by its name) and the shared settings, frozen and validated.

    ``SlothSettings(tile=TileSettings(enabled=True), upcast_attention=True)``; blocks not given
    take their defaults. Methods registered after creation are not part of it.
    """

    __slots__ = ("_blocks", "_shared")

    def __init__(self, **values):
        shared_names = {f.name for f in dataclasses.fields(SharedSettings)}
        shared = SharedSettings(**{k: values.pop(k) for k in list(values) if k in shared_names})
        blocks = {}
        for method in methods.all_methods():
            block = values.pop(method.name, None)
            blocks[method.name] = method.settings() if block is None else block
        if values:
            raise TypeError(f"SlothSettings got unknown settings {sorted(values)}; known: "
                            f"{[*blocks, *shared_names]}")
        object.__setattr__(self, "_blocks", blocks)
        object.__setattr__(self, "_shared", shared)
        _check_combination(self)

    def __getattr__(self, name):
        if not name.startswith("_"):
            blocks = object.__getattribute__(self, "_blocks")
            if name in blocks:
                return blocks[name]
            shared = object.__getattribute__(self, "_shared")
            if hasattr(shared, name):
                return getattr(shared, name)
        raise AttributeError(f"SlothSettings has no setting {name!r}")

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def blocks(self) -> dict[str, Any]:
        """Method name -> its settings block, in the table's order."""
        return dict(self._blocks)

    @property
    def shared(self) -> SharedSettings:
        return self._shared

    def replace(self, **changes) -> "SlothSettings":
        """A copy with some blocks or shared settings replaced (validated like any settings)."""
        return SlothSettings(**{**self._blocks, **dataclasses.asdict(self._shared), **changes})

    @property
    def active(self) -> bool:
        """Whether any method would change the UNet's output."""
        return methods.any_active(self)

    def __eq__(self, other):
        if not isinstance(other, SlothSettings):
            return NotImplemented
        return self._blocks == other._blocks and self._shared == other._shared

    def __hash__(self):
        return hash((tuple(self._blocks.items()), self._shared))

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in [*self._blocks.items(), *vars_of(self._shared).items()])
        return f"SlothSettings({inner})"

    def __reduce__(self):
        return _restore, (self._blocks, self._shared)


def _restore(blocks, shared):
    settings = object.__new__(SlothSettings)
    object.__setattr__(settings, "_blocks", dict(blocks))
    object.__setattr__(settings, "_shared", shared)
    return settings


def vars_of(block) -> dict[str, Any]:
    return {f.name: getattr(block, f.name) for f in dataclasses.fields(block)}


def _check_combination(settings: SlothSettings) -> None:
    """Refuse two enabled methods that the table says cannot run together; names the later one."""
    enabled = [name for name, block in settings._blocks.items() if block.enabled]
    for j, later in enumerate(enabled):
        for earlier in enabled[:j]:
            reason = methods.conflict_reason(earlier, later)
            if reason:
                raise SettingsError(f"{later}.enabled", f": {earlier} and {later} are enabled together, but "
                                    f"{reason}; enable only one of them")


# ---------------------------------------------------------------------------------------------
# The flat table and plain data
# ---------------------------------------------------------------------------------------------
def iter_fields() -> Iterator[FieldSpec]:
    """Every leaf setting with its dotted path: each method's block in table order, then the shared ones."""
    return iter(_table(methods.all_methods()))


@functools.lru_cache(maxsize=8)
def _table(table: tuple) -> tuple[FieldSpec, ...]:
    specs = [spec for method in table for spec in walk_fields(method.settings, method.name + ".")]
    return tuple(specs) + walk_fields(SharedSettings)


def _takes(spec: FieldSpec, value: Any) -> bool:
    """Whether the setting `spec` would take `value` (for ranking the names an unknown name suggests)."""
    try:
        values.parse(spec, value)
    except SettingsError:
        return False
    return True


def settings_from_dict(data: Mapping[str, Any] | None, base: SlothSettings | None = None) -> SlothSettings:
    """Build validated settings from nested dicts and/or dotted keys, over `base` (defaults).

    Unknown keys and bad values raise `SettingsError` naming the field and its allowed range.
    """
    flat = flatten(data or {})
    specs = {s.path: s for s in iter_fields()}
    unknown = sorted(set(flat) - set(specs))
    if unknown:
        given = flat[unknown[0]]
        raise values.unknown(unknown[0], specs, fits=lambda path: _takes(specs[path], given))
    merged = {s.path: s.default for s in specs.values()}
    merged.update(to_flat(base or SlothSettings()))
    for path, value in flat.items():
        merged[path] = values.parse(specs[path], value)
    blocks = {m.name: build_block(m.settings, merged, m.name + ".") for m in methods.all_methods()}
    shared = build_block(SharedSettings, merged)
    try:
        return SlothSettings(**blocks, **vars_of(shared))
    except SettingsError as err:
        raise err.under("") from None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and/or dotted keys -> dotted path -> value."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = prefix + str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def to_flat(settings) -> dict[str, Any]:
    """Dotted path -> value for every leaf setting (of SlothSettings, or of one block)."""
    if not isinstance(settings, SlothSettings):
        return block_to_flat(settings)
    out: dict[str, Any] = {}
    for name, block in settings.blocks().items():
        out.update({f"{name}.{k}": v for k, v in block_to_flat(block).items()})
    out.update(block_to_flat(settings.shared))
    return out


def to_dict(settings: SlothSettings) -> dict[str, Any]:
    """Nested plain dict (JSON-ready)."""
    return {**{name: dataclasses.asdict(block) for name, block in settings.blocks().items()},
            **dataclasses.asdict(settings.shared)}
