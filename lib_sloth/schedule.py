"""Where in the schedule and how deep in the UNet a layer call is, as strength multipliers."""
from __future__ import annotations

import math

from .geometry import snap


def progress(step: int, total: int) -> float:
    """0 at the first step of the pass, 1 at the last."""
    return step / max(total - 1, 1)


def in_window(step: int, total: int, start: float, end: float) -> bool:
    """Whether a step lies in the window [start, end] of progress (0 = first step, 1 = last; both ends
    included, as Forge's built-in PAG). start > end is an empty window."""
    return start <= progress(step, total) <= end


def time_ratio(prog: float, peak_time: float, time_decay: float) -> float:
    """1 at the peak, falling like a Gaussian away from it; decay 0 keeps it at 1."""
    if time_decay <= 0:
        return 1.0
    return math.exp(-(((prog - peak_time) * time_decay) ** 2))


def depth_ratio(level: int, depth_decay: float) -> float:
    """(1/2^level)^depth_decay: each level deeper divides the strength by 2^depth_decay."""
    return (0.5 ** level) ** depth_decay


def lerp(a: float, b: float, t: float) -> float:
    """a at t = 0, b at t = 1, exactly: the node's form (a + (b - a)·t gives 0.8999999999999999
    for 0.2 -> 0.9 at t = 1)."""
    return a * (1 - t) + b * t


def round_half_up(x: float) -> int:
    return int(math.floor(snap(x + 0.5)))
