"""The configurations the quality table compares, and the degradations that validate it.

A configuration is Sloth settings plus how the sampler runs (steps, CFG scale) and, for the
yardstick's validation and the tomesd comparison, something done to the UNet for the run
(`unet_change`: a context manager factory taking the UNet).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from ..bench_cases import tomesd_case
from ..layers import find_self_attention
from ..presets import PRESETS, preset
from ..settings import SlothSettings, settings_from_dict

STEPS = 10
CFG_SCALE = 4.0


@dataclass(frozen=True)
class Config:
    name: str
    group: str
    settings: SlothSettings = field(default_factory=SlothSettings)
    steps: int = STEPS
    cfg_scale: float = CFG_SCALE
    unet_change: Optional[Callable] = None  # unet -> context manager


@contextlib.contextmanager
def level0_attn1_ablated(unet):
    """Level-0 self-attention replaced by to_out(to_v(x)): every token attends only to itself.

    Level 0 is the 32 x 32 grid, whose attn1 layers are the ones on model_channels channels.
    The instance forwards are removed again on exit."""
    layers = [m for m in find_self_attention(unet) if m.to_q.in_features == unet.model_channels]

    def only_values(module):
        return lambda x, *args, **kwargs: module.to_out(module.to_v(x))

    for m in layers:
        m.forward = only_values(m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def tomesd_merging(ratio: float) -> Callable:
    """tomesd 0.1.3's own patch at `ratio` (the benchmark's case: its defaults otherwise, level 0,
    2 x 2 cells, random destination from the global torch generator, which `seeded` seeds)."""
    return tomesd_case(ratio).enter


def validation() -> List[Config]:
    """Plain and the known degradations the yardstick must rank below it."""
    return [
        Config("plain", "validation"),
        Config("level-0 attn1 -> to_out(to_v(x))", "validation", unet_change=level0_attn1_ablated),
        Config("CFG far too high (30)", "validation", cfg_scale=30.0),
        Config("fewer steps (3)", "validation", steps=3),
    ]


def _s(data: Dict) -> SlothSettings:
    return settings_from_dict(data)


def table() -> List[Config]:
    """Every row of the quality table, plain first."""
    rows = validation()
    rows += [Config(f"preset {name}", "presets", preset(name)) for name in PRESETS if name != "off"]
    rows += [Config(f"slothful strength {s}", "Slothful", _s({"slothful.enabled": True, "slothful.input.slothful": s,
                                                              "slothful.output.slothful": s}))
             for s in (8, 32)]  # preset slothful: its default strength
    rows += [Config("tile 16, global 0.5", "Near-sighted", _s({"tile.enabled": True, "tile.tile_size": 16})),
             Config("attention 16 -> 24", "Near-sighted", _s({"nearsighted.enabled": True,
                                                              "nearsighted.base_tile_size": 16,
                                                              "nearsighted.peak_tile_size": 24}))]
    # the authors' claim is about one ratio: early (agent attention), late (ToMe) and tomesd at r 0.5
    # (preset agentsd is both phases at the defaults)
    phase = {"ratio": 0.5}
    rows += [Config("agentsd early, r 0.5", "AgentSD vs ToMe",
                    _s({"agentsd": {"enabled": True, "switch_at": 1.0, "early": phase}})),
             Config("agentsd late (ToMe), r 0.5", "AgentSD vs ToMe",
                    _s({"agentsd": {"enabled": True, "switch_at": 0.0, "late": phase}})),
             Config("tomesd 0.5", "AgentSD vs ToMe", unet_change=tomesd_merging(0.5))]
    # guidance at a second scale; its preset row above is the first (SAG 0.5, PAG 3, SEG 3)
    rows += [Config("SAG scale 2.0", "SAG", _s({"sag.enabled": True, "sag.scale": 2.0})),
             Config("PAG scale 6.0", "PAG", _s({"pag.enabled": True, "pag.scale": 6.0})),
             Config("SEG scale 6.0", "SEG", _s({"seg.enabled": True, "seg.scale": 6.0}))]
    return rows


def by_name(name: str) -> Config:
    for c in table():
        if c.name == name:
            return c
    raise KeyError(name)


def seeded(config: Config, seed: int):
    """The run's context: the config's UNet change, with torch's global generator seeded (tomesd)."""
    torch.manual_seed(seed)
    return config.unet_change if config.unet_change is not None else (lambda unet: contextlib.nullcontext())
