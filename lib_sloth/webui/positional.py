"""Which of the Script's positional args sits at which index, for good.

API clients send the UI's values as one list (``alwayson_scripts: {"sloth": {"args": [...]}}``,
the form every peer extension documents), so once a name has an index it keeps it in every later
release. The layout is::

    V1 + V2 + ...              the pinned generations, in order (`GENERATIONS`)
    + every other setting      in the settings table's order: methods registered at run time

Rules (tests/test_positional.py holds every pinned index in a literal table):

- Nothing pinned ever moves or goes away: a generation only grows at its end, and a setting or
  method is never removed or renamed (as with info-text keys).
- A change that adds a setting or a method to the built-in table (`methods.BUILTIN`) appends its
  new paths to the newest generation, in the order the layout gave them unpinned, and their
  indexes to the test's table (a test fails, naming them, until it does). The first such change
  after a release opens the next generation (``V2 = (...)``, then ``GENERATIONS = (V1, V2)``):
  one generation per release, so each generation's end is the length of a released UI's list.
- Only methods registered at run time (`methods.register`) stay unpinned: they come last, after
  every pinned name, and move nothing.

A client may send a list as long as any generation's end (a released UI's list: the settings
added later take their defaults) or as the whole layout; see `lengths`.
"""
from __future__ import annotations

from typing import Iterable

# Released with the first version of the extension: the Script's own args (enabled, preset, the
# hidden paste_problems box) around the settings table of that time.
V1 = (
    "enabled", "preset",
    "slothful.enabled", "slothful.peak_time", "slothful.time_decay", "slothful.keep_middle",
    "slothful.input.mode", "slothful.input.slothful", "slothful.input.depth_decay",
    "slothful.input.k_blend", "slothful.input.v_blend",
    "slothful.output.mode", "slothful.output.slothful", "slothful.output.depth_decay",
    "slothful.output.k_blend", "slothful.output.v_blend",
    "tile.enabled", "tile.tile_size", "tile.global_ratio", "tile.max_depth",
    "nearsighted.enabled", "nearsighted.max_depth", "nearsighted.peak_time", "nearsighted.time_decay",
    "nearsighted.keep_middle", "nearsighted.base_tile_size", "nearsighted.peak_tile_size",
    "nearsighted.base_global_ratio", "nearsighted.peak_global_ratio",
    "nearsighted.input.mode", "nearsighted.input.slothful", "nearsighted.input.depth_decay",
    "nearsighted.input.k_blend", "nearsighted.input.v_blend",
    "nearsighted.output.mode", "nearsighted.output.slothful", "nearsighted.output.depth_decay",
    "nearsighted.output.k_blend", "nearsighted.output.v_blend",
    "agentsd.enabled", "agentsd.max_downsample", "agentsd.switch_at", "agentsd.use_rand",
    "agentsd.k_scale2", "agentsd.k_shortcut", "agentsd.fp32",
    "agentsd.early.sx", "agentsd.early.sy", "agentsd.early.ratio", "agentsd.early.agent_ratio",
    "agentsd.late.sx", "agentsd.late.sy", "agentsd.late.ratio", "agentsd.late.agent_ratio",
    "sag.enabled", "sag.scale", "sag.blur_sigma", "sag.threshold",
    "upcast_attention", "show_maps",
    "paste_problems",
)

GENERATIONS: tuple[tuple[str, ...], ...] = (V1,)  # one per release; only ever append


def pinned() -> list[str]:
    """Every pinned name, at its index."""
    return [name for generation in GENERATIONS for name in generation]


def layout(paths: Iterable[str]) -> list[str]:
    """Every positional name, at its index: the pinned names, then each of `paths` (the settings
    table's paths, in its order) that no generation pins."""
    names = pinned()
    taken = set(names)
    return [*names, *(path for path in paths if path not in taken)]


def lengths(paths: Iterable[str]) -> list[int]:
    """The lengths a positional list may have, ascending: each generation's end (a released UI's
    list) and the whole layout of `paths`."""
    ends, total = [], 0
    for generation in GENERATIONS:
        total += len(generation)
        ends.append(total)
    return sorted({*ends, len(layout(paths))})
