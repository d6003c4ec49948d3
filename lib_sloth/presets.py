"""Built-in presets: starting points, not magic. Each is a partial dict over the defaults.

``off`` (every method off) comes first; every other preset is contributed by its method's
entry in the method table (lib_sloth.methods), so `PRESETS` always matches the table.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from . import methods, values
from .fields import SettingsError
from .settings import SlothSettings, settings_from_dict

OFF = "off"


class _BuiltinPresets(Mapping):
    """Preset name -> partial settings dict, read from the method table on every access."""

    def _all(self) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {OFF: {}}
        for method in methods.all_methods():
            out.update(method.presets)
        return out

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self):
        return f"PRESETS({list(self)})"


PRESETS: Mapping[str, Mapping[str, Any]] = _BuiltinPresets()


def preset(name: str) -> SlothSettings:
    """The settings of built-in preset `name`."""
    if not isinstance(name, str) or name not in PRESETS:
        raise SettingsError("preset", f"={values.shorten(name)} is not a preset; choose one of {list(PRESETS)}")
    return settings_from_dict(PRESETS[name])
