"""Names the user sees for every setting: UI labels, X/Y/Z axis labels, element ids.

Derived from the settings table's paths and the method table (section titles, short names,
section order), so a new setting or method gets its labels without an edit here; `WORDS` only
renames the few field names that read badly on their own.
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
    """The control's label inside its section ("slothful.input.k_blend" -> "Input K blend")."""
    parts = path.split(".")
    if len(parts) == 2 and parts[1] == "enabled":
        return f"Enable {section_title(parts[0])}"
    if len(parts) > 1:
        parts = parts[1:]
    text = " ".join([GROUPS.get(p, _words(p)) for p in parts[:-1]] + [_words(parts[-1])])
    return text[0].upper() + text[1:]


def xyz_label(path: str) -> str:
    """"[Sloth] Slothful input K blend"; settings outside a method read "[Sloth] Upcast attention"."""
    parts = path.split(".")
    if len(parts) == 1:
        return f"{XYZ_PREFIX} {label(path)}"
    head = methods.get(parts[0]).short
    if parts[1:] == ["enabled"]:
        return f"{XYZ_PREFIX} {head} enabled"
    text = label(path)
    return f"{XYZ_PREFIX} {head} {text[0].lower() + text[1:] if not text[:2].isupper() else text}"


def item_id(path: str) -> str:
    """The elem_id suffix of a setting's control ("slothful.input.k_blend" -> "slothful__input__k_blend")."""
    return path.replace(".", "__")


def paths() -> list[str]:
    return [spec.path for spec in iter_fields()]
