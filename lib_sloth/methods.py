"""The table of methods: one `Method` record per method, and everything derived from the table.

A method is one module (its settings block class, with an `active` property, and its planner)
plus one entry in `BUILTIN` below. The settings (lib_sloth.settings), the validation of
combinations, the planners' order, `any_active`, the info-text keys, the UI sections, the X/Y/Z
axes, the API names, the hints and the built-in presets all read this table; the one other edit
is pinning the new paths' positional indexes (lib_sloth/webui/positional.py; a test enforces it
for built-in methods). `register` adds a method at run time (tests; and extensions of the
extension) and returns the undo.

Contract of a method's settings block: a frozen dataclass (lib_sloth.fields.Validated) whose
first field is ``enabled: bool`` and which has an ``active`` property ("these settings can
change the UNet's output"; False = install nothing for this method).
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from .agentsd import AgentSDSettings, plan_agentsd
from .layer_call import LayerCall, Planner, Runner
from .nearsighted import NearSightedSettings, TileSettings, plan_nearsighted, plan_tile
from .sag import SagSettings
from .slothful import SlothfulSettings, plan_slothful


@dataclass(frozen=True)
class Conflict:
    """This method cannot be enabled together with any of `others`, because `reason`."""

    others: tuple[str, ...]
    reason: str  # completes "a and b are enabled together, but ..."


@dataclass(frozen=True, eq=False)
class Method:
    """One method, as every part of the extension sees it."""

    name: str  # its settings block and the prefix of its paths: "slothful" -> "slothful.input.k_blend"
    settings: type  # its settings block class (see the module docstring)
    title: str  # UI section title and the words of "Enable <title>"
    short: str  # first word(s) of its control labels and X/Y/Z axes: "<short> peak time", "[Sloth] <short> enabled"
    infotext_key: str  # its info-text key; part of the info-text format: never rename (migrate instead)
    plan: Optional[Planner] = None  # None for a method that is not a per-layer rewrite (SAG guides the CFG)
    conflicts: tuple[Conflict, ...] = ()  # checked both ways: declaring it on one side is enough
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # built-in presets it contributes
    plan_rank: int = 0  # lower plans first at each layer; ties keep the table's order
    ui_rank: int = 0  # lower shows first in the accordion; ties keep the table's order

    def block(self, settings):
        """This method's settings block inside a SlothSettings."""
        return getattr(settings, self.name)

    def active(self, settings) -> bool:
        """Whether this method can change the UNet's output with these SlothSettings."""
        return self.block(settings).active


_REWRITE = "they rewrite the same self-attention layers in different ways"
_TOKEN_GRID = ("both start at the shallowest attention level and tiling needs the token grid that merging "
               "removes")

BUILTIN: tuple[Method, ...] = (  # the settings table's order (info text, UI sections): never reorder
    Method("slothful", SlothfulSettings, "Slothful Attention", "Slothful", "Sloth Slothful", plan_slothful,
           conflicts=(Conflict(("tile", "nearsighted"), _REWRITE),),
           presets={
               # The original node's defaults: softer, calmer images.
               "slothful": {"slothful": {"enabled": True}},
               # Pooled keys in the input blocks reduce noise and fine clutter.
               "soft": {"slothful": {"enabled": True, "input": {"k_blend": 0.4}, "output": {"v_blend": 0.3}}},
           }),
    Method("tile", TileSettings, "Near-sighted Tile", "Tile", "Sloth Tile", plan_tile,
           conflicts=(Conflict(("nearsighted",), _REWRITE),),
           # Tiles with a wide global view sharpen small structures while keeping the layout.
           presets={"detail": {"tile": {"enabled": True, "tile_size": 32, "global_ratio": 0.5}}}),
    Method("nearsighted", NearSightedSettings, "Near-sighted Attention", "Near-sighted", "Sloth NSA", plan_nearsighted,
           # Near-sighted Attention at its defaults is the fastest of the three rewrites.
           presets={"speed": {"nearsighted": {"enabled": True}}}),
    # AgentSD plans first: it takes the layers it merges at this step, Slothful (if on) the rest.
    Method("agentsd", AgentSDSettings, "AgentSD", "AgentSD", "Sloth AgentSD", plan_agentsd,
           conflicts=(Conflict(("tile", "nearsighted"), _TOKEN_GRID),),
           # The AgentSD authors' two-phase schedule.
           presets={"agentsd": {"agentsd": {"enabled": True}}},
           plan_rank=-1, ui_rank=1),
    # SAG works through the patch's interceptor (lib_sloth.sag.SagPass), not a planner.
    Method("sag", SagSettings, "Self-Attention Guidance", "SAG", "Sloth SAG",
           # SAG at its usual strength: cleaner backgrounds for one more UNet pass per step.
           presets={"background fix": {"sag": {"enabled": True, "scale": 0.5, "blur_sigma": 2.0}}}),
)

_table: list[Method] = list(BUILTIN)
# Names a method may not take: the settings outside every method, and the Script's own args.
RESERVED = frozenset({"upcast_attention", "enabled", "preset"})
_KEY = re.compile(r"\w[\w \-/]+")  # the WebUI's info-text key pattern (modules/infotext_utils.py re_param)


def all_methods() -> tuple[Method, ...]:
    """Every registered method, in the settings table's order."""
    return tuple(_table)


def get(name: str) -> Method:
    for method in _table:
        if method.name == name:
            return method
    raise KeyError(f"no method named {name!r}; known: {[m.name for m in _table]}")


def names() -> list[str]:
    return [m.name for m in _table]


def in_plan_order() -> list[Method]:
    return sorted((m for m in _table if m.plan is not None), key=lambda m: m.plan_rank)


def in_ui_order() -> list[Method]:
    return sorted(_table, key=lambda m: m.ui_rank)


# ---- registration -----------------------------------------------------------------------------
def register(method: Method):
    """Add `method` at the end of the table; returns a function that removes it again."""
    problem = _problem(method)
    if problem:
        raise ValueError(f"cannot register method {method.name!r}: {problem}")
    _table.append(method)

    def unregister():
        if method in _table:
            _table.remove(method)

    return unregister


@contextlib.contextmanager
def registered(method: Method) -> Iterator[Method]:
    """`method` is in the table inside the `with` block only."""
    undo = register(method)
    try:
        yield method
    finally:
        undo()


def _problem(method: Method) -> str:
    if not method.name.isidentifier() or method.name in RESERVED:
        return "the name must be an identifier and not one of " + ", ".join(sorted(RESERVED))
    if method.name in names():
        return "a method with that name is registered"
    if not _KEY.fullmatch(method.infotext_key) or any(m.infotext_key == method.infotext_key for m in _table):
        return f"info-text key {method.infotext_key!r} is taken or does not match the WebUI's key pattern"
    fields = [f.name for f in dataclasses.fields(method.settings)]
    if not fields or fields[0] != "enabled" or not isinstance(getattr(method.settings, "active", None), property):
        return "its settings class needs `enabled` as its first field and an `active` property"
    known = {*names(), method.name}
    unknown = [o for c in method.conflicts for o in c.others if o not in known]
    if unknown:
        return f"conflicts name unknown methods {unknown}"
    taken = {p for m in _table for p in m.presets}
    if "off" in method.presets or taken & set(method.presets):
        return f"presets {sorted(taken & set(method.presets)) or ['off']} already exist"
    return ""


# ---- derived ----------------------------------------------------------------------------------
def conflict_reason(a: str, b: str) -> Optional[str]:
    """Why methods `a` and `b` cannot be enabled together, or None when they can."""
    table = {m.name: m for m in _table}
    for method, other in ((a, b), (b, a)):
        for conflict in (table[method].conflicts if method in table else ()):
            if other in conflict.others:
                return conflict.reason
    return None


def rivals(name: str) -> list[str]:
    """The methods that cannot be enabled together with `name`, in table order."""
    return [m.name for m in _table if m.name != name and conflict_reason(name, m.name) is not None]


def plan_layer(settings, call: LayerCall) -> Optional[Runner]:
    """The first planner (in plan order) that rewrites this call, or None: leave it to the original."""
    for method in in_plan_order():
        runner = method.plan(method.block(settings), call)
        if runner is not None:
            return runner
    return None


def any_active(settings) -> bool:
    """Could any method change the UNet's output? False = install nothing at all."""
    return any(m.active(settings) for m in _table)
