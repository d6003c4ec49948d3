"""Names the user sees for every setting: UI labels, X/Y/Z axis labels, element ids.

Derived from the settings table's paths and the method table (section titles, short names,
section order), so a new setting or method gets its labels without an edit here; `WORDS` only
renames the few field names that read badly on their own.

A control's label is its X/Y/Z axis name without "[Sloth] ": the method's short name, then the
setting's words ("Slothful peak time", "Near-sighted input K blend", "Tile size"). The WebUI
keys a control's saved default by its label (ui-config.json
``customscript/sloth.py/<tab>/<label>/value``), so labels must differ across sections, not only
within one; the short name makes them differ, and the same words name the axis that sweeps it.
"""
from __future__ import annotations

from .. import methods
from ..settings import iter_fields

EXTENSION = "Sloth"
XYZ_PREFIX = f"[{EXTENSION}]"

WORDS = {
    "slothful": "strength",
    "mode": "pool mode",
    "k_blend": "K blend",
    "v_blend": "V blend",
    "keep_middle": "keep middle block",
    "sx": "merge cell width",
    "sy": "merge cell height",
    "ratio": "merge ratio",
    "k_scale2": "agent softmax scale",
    "k_shortcut": "value shortcut",
    "use_rand": "random merge cell",
    "fp32": "FP32 similarities",
    "upcast_attention": "upcast attention",
    "show_maps": "show Sloth maps",
}
GROUPS = {"input": "input", "output": "output", "early": "early", "late": "late"}


def sections() -> list[str]:
    """The method blocks in UI order (the method table's ui_rank; the args keep the table's order)."""
    return [m.name for m in methods.in_ui_order()]


def section_title(block: str) -> str:
    """"Slothful Attention" etc.: the method's title."""
    return methods.get(block).title


def _words(name: str) -> str:
    return WORDS.get(name, name.replace("_", " "))


def label(path: str) -> str:
    """The control's label: unique within the tab ("slothful.input.k_blend" -> "Slothful input K blend")."""
    parts = path.split(".")
    if len(parts) == 2 and parts[1] == "enabled":
        return f"Enable {section_title(parts[0])}"
    words = " ".join([GROUPS.get(p, _words(p)) for p in parts[1:-1]] + [_words(parts[-1])]) if len(parts) > 1 \
        else _words(parts[0])
    if len(parts) == 1:
        return words[0].upper() + words[1:]
    return _after(methods.get(parts[0]).short, words)


def _after(short: str, words: str) -> str:
    """`short` then `words`, saying a shared word once ("Tile" + "tile size" -> "Tile size")."""
    last = short.split()[-1]
    first, _, rest = words.partition(" ")
    if first.lower() == last.lower() and rest:
        return f"{short} {rest}"
    return f"{short} {words}"


def xyz_label(path: str) -> str:
    """"[Sloth] Slothful input K blend"; a method's enable reads "[Sloth] Slothful enabled"."""
    parts = path.split(".")
    if len(parts) == 2 and parts[1] == "enabled":
        return f"{XYZ_PREFIX} {methods.get(parts[0]).short} enabled"
    return f"{XYZ_PREFIX} {label(path)}"


def item_id(path: str) -> str:
    """The elem_id suffix of a setting's control ("slothful.input.k_blend" -> "slothful__input__k_blend")."""
    return path.replace(".", "__")


def paths() -> list[str]:
    return [spec.path for spec in iter_fields()]
