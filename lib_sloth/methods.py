"""The table of methods: one `Method` record per method, and everything derived from the table.

A method is one module (its settings block class, with an `active` property, and its planner
or its guidance class) plus one entry in `BUILTIN` below. Its entry also says what it needs at
run time (the transformer block's input; an extra UNet pass, through its guidance class) and when
it stands down (the WebUI's own token merging), so the patch and the adapters never name a method. The settings (lib_sloth.settings), the validation of
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
from typing import Any, Callable, Iterator, List, Mapping, Optional

from .agentsd import AgentSDSettings, plan_agentsd
from .layer_call import LayerCall, Plan, Planner
from .nearsighted import NearSightedSettings, TileSettings, nearsighted_idle_reason, plan_nearsighted, plan_tile, \
    tile_idle_reason
from .pag import PagPass, PagSettings
from .sag import SagPass, SagSettings
from .seg import SegPass, SegSettings
from .slothful import SlothfulSettings, idle_reason as slothful_idle_reason, plan_slothful


@dataclass(frozen=True)
class Conflict:
    """This method cannot be enabled together with any of `others`, because `reason`."""

    others: tuple[str, ...]
    reason: str  # completes "a and b are enabled together, but ..."


@dataclass(frozen=True)
class BenchCase:
    """One benchmark row of a method: these named settings at this point of the schedule."""

    name: str  # the row's name in the bench table: "agentsd early"
    settings: Mapping[str, Any]  # named values, as the API takes them
    progress: float = 0.4  # where in the schedule it is timed (0.4: the schedules' default peak)


@dataclass(frozen=True, eq=False)
class Method:
    """One method, as every part of the extension sees it."""

    name: str  # its settings block and the prefix of its paths: "slothful" -> "slothful.input.k_blend"
    settings: type  # its settings block class (see the module docstring)
    title: str  # UI section title and the words of "Enable <title>"
    short: str  # first word(s) of its control labels and X/Y/Z axes: "<short> peak time", "[Sloth] <short> enabled"
    infotext_key: str  # its info-text key; part of the info-text format: never rename (migrate instead)
    plan: Optional[Planner] = None  # a per-layer rewrite: plan(settings block, LayerCall) -> Plan or None
    guidance: Optional[type] = None  # a guidance method: its lib_sloth.guidance.Guidance subclass
    needs_block_input: bool = False  # its plans read LayerCall.block_input (the transformer block's input)
    yields_to_token_merging: bool = False  # stands down while the WebUI's own token merging (tomesd) is on
    # its plans depend on the call's batch size (AgentSD: random merging only for even batches), so no
    # guidance appends rows to the normal UNet call while it is on (they make their own calls instead)
    batch_sensitive: bool = False
    conflicts: tuple[Conflict, ...] = ()  # checked both ways: declaring it on one side is enough
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # built-in presets it contributes
    plan_rank: int = 0  # lower plans first at each layer; ties keep the table's order
    ui_rank: int = 0  # lower shows first in the accordion; ties keep the table's order
    bench: tuple[BenchCase, ...] = ()  # its bench rows; () = one row with the method on at its defaults
    # (function in its module, stage) pairs the bench's --profile times: what its own kernels cost
    profile_stages: tuple[tuple[str, str], ...] = ()
    # why(settings block, LayerCalls of a pass) -> why it rewrote none of them, for `Sloth notes` (lib_sloth.idle)
    idle_reason: Optional[Callable[[Any, list], str]] = None

    def block(self, settings):
        """This method's settings block inside a SlothSettings."""
        return getattr(settings, self.name)

    def active(self, settings) -> bool:
        """Whether this method can change the UNet's output with these SlothSettings."""
        return self.block(settings).active


_REWRITE = "they rewrite the same self-attention layers in different ways"
_TILING_STAGES = (("tile", "tiling copies"), ("tile_with_room", "tiling copies"), ("untile", "tiling copies"),
                  ("fill_per_tile", "tiling copies"), ("_with_global", "tiling copies"))
_TOKEN_GRID = ("both start at the shallowest attention level and tiling needs the token grid that merging "
               "removes")

BUILTIN: tuple[Method, ...] = (  # the settings table's order (info text, UI sections): never reorder
    Method("slothful", SlothfulSettings, "Slothful Attention", "Slothful", "Sloth Slothful", plan_slothful,
           conflicts=(Conflict(("tile", "nearsighted"), _REWRITE),),
           profile_stages=(("reduce_tokens", "pooling"),), idle_reason=slothful_idle_reason,
           presets={
               # The original node's defaults: softer, calmer images.
               "slothful": {"slothful": {"enabled": True}},
               # Pooled keys in the input blocks reduce noise and fine clutter.
               "soft": {"slothful": {"enabled": True, "input": {"k_blend": 0.4}, "output": {"v_blend": 0.3}}},
           }),
    Method("tile", TileSettings, "Near-sighted Tile", "Tile", "Sloth Tile", plan_tile,
           conflicts=(Conflict(("nearsighted",), _REWRITE),),
           bench=(BenchCase("nearsighted tile", {"tile.enabled": True}),), profile_stages=_TILING_STAGES,
           idle_reason=tile_idle_reason,
           # Tiles with a wide global view sharpen small structures while keeping the layout.
           presets={"detail": {"tile": {"enabled": True, "tile_size": 32, "global_ratio": 0.5}}}),
    Method("nearsighted", NearSightedSettings, "Near-sighted Attention", "Near-sighted", "Sloth NSA", plan_nearsighted,
           bench=(BenchCase("nearsighted attention", {"nearsighted.enabled": True}),),
           profile_stages=(*_TILING_STAGES, ("reduce_tokens", "pooling"), ("pick_in_tiles", "pooling")),
           idle_reason=nearsighted_idle_reason,
           # Near-sighted Attention at its defaults is the fastest of the three rewrites.
           presets={"speed": {"nearsighted": {"enabled": True}}}),
    # AgentSD plans first: it takes the layers it merges at this step, Slothful (if on) the rest.
    # It merges tokens itself (never twice), matched on the block input as tomesd does.
    Method("agentsd", AgentSDSettings, "AgentSD", "AgentSD", "Sloth AgentSD", plan_agentsd,
           needs_block_input=True, yields_to_token_merging=True, batch_sensitive=True,
           bench=(BenchCase("agentsd early", {"agentsd.enabled": True}, 0.0),
                  BenchCase("agentsd late", {"agentsd.enabled": True}, 1.0)),
           profile_stages=(("match", "matching"),),
           conflicts=(Conflict(("tile", "nearsighted"), _TOKEN_GRID),),
           # The AgentSD authors' two-phase schedule.
           presets={"agentsd": {"agentsd": {"enabled": True}}},
           plan_rank=-1, ui_rank=1),
    # SAG is a guidance method (lib_sloth.guidance): it records a map and makes one more UNet call.
    Method("sag", SagSettings, "Self-Attention Guidance", "SAG", "Sloth SAG", guidance=SagPass,
           profile_stages=(("attention_with_map", "sag map capture"), ("attention_mask", "sag mask + blur"),
                           ("degrade", "sag mask + blur")),
           # SAG at its usual strength: cleaner backgrounds for one more UNet pass per step.
           presets={"background fix": {"sag": {"enabled": True, "scale": 0.5, "blur_sigma": 2.0}}}),
    # PAG and SEG: one more cond row per step with chosen layers perturbed (lib_sloth.perturbed),
    # batched into the CFG call where the WebUI batches (the bench's batched rows: bench_cases.guidance_cases)
    Method("pag", PagSettings, "Perturbed-Attention Guidance", "PAG", "Sloth PAG", guidance=PagPass,
           bench=(BenchCase("cfg step + PAG (separate)", {"pag.enabled": True}),),
           profile_stages=(("identity_attention", "pag identity"),),
           # ComfyUI's PerturbedAttentionGuidance node at its default: firmer structure and anatomy.
           presets={"structure fix": {"pag": {"enabled": True, "scale": 3.0}}}),
    Method("seg", SegSettings, "Smoothed Energy Guidance", "SEG", "Sloth SEG", guidance=SegPass,
           bench=(BenchCase("cfg step + SEG (separate)", {"seg.enabled": True}),),
           profile_stages=(("blur_queries", "seg query blur"),),
           # The SEG authors' defaults: scale 3, infinite blur of the middle block's queries.
           presets={"smooth energy": {"seg": {"enabled": True}}}),
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
    if (method.plan is None) == (method.guidance is None):
        return "it needs exactly one of `plan` (a per-layer rewrite) and `guidance` (a guidance method)"
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


def plan_layer(settings, call: LayerCall) -> Optional[Plan]:
    """The first planner (in plan order) that rewrites this call, or None: leave it to the original."""
    for method in in_plan_order():
        plan = method.plan(method.block(settings), call)
        if plan is not None:
            return plan
    return None


def any_active(settings) -> bool:
    """Could any method change the UNet's output? False = install nothing at all."""
    return any(m.active(settings) for m in _table)


def needs_block_input(settings) -> bool:
    """Whether an enabled method reads the transformer blocks' inputs (the patch hooks the blocks only then)."""
    return any(m.needs_block_input and m.block(settings).enabled for m in _table)


def batch_sensitive(settings) -> bool:
    """Whether an enabled method's plans depend on the batch size (then no rows are appended to a call)."""
    return any(m.batch_sensitive and m.block(settings).enabled for m in _table)


def guidance_methods(settings) -> List[Method]:
    """The active guidance methods, in table order."""
    return [m for m in _table if m.guidance is not None and m.active(settings)]


def bench_cases(method: Method) -> tuple[BenchCase, ...]:
    """The method's bench rows: its own, or one with the method on at its defaults."""
    if method.bench:
        return method.bench
    name = method.name if method.plan is not None else f"cfg step + {method.short}"
    return (BenchCase(name, {f"{method.name}.enabled": True}),)


def kernel_module(method: Method):
    """The module that holds the method's kernels (its planner's or guidance class's module)."""
    import sys

    return sys.modules[(method.plan or method.guidance).__module__]


def method_of(guidance) -> Method:
    """The table entry of a guidance object (lib_sloth.guidance.Guidance)."""
    return next(m for m in _table if m.guidance is not None and type(guidance) is m.guidance)


def without(settings, names) -> Any:
    """The same SlothSettings with the methods `names` switched off (everything else unchanged)."""
    return settings.replace(**{n: dataclasses.replace(get(n).block(settings), enabled=False) for n in names})


def standing_down_for_token_merging(settings) -> List[Method]:
    """The enabled methods that stand down while the WebUI's own token merging is on."""
    return [m for m in _table if m.yields_to_token_merging and m.block(settings).enabled]


def token_merging_note(method: Method, where: str) -> str:
    """The note for `method` standing down because of token merging; `where` names the WebUI's switch."""
    return (f"{method.title} skipped: {where}, and tokens must not be merged twice; set that ratio to 0 "
            f"to use {method.title}")
