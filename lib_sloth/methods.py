"""Which rewrite, if any, runs at one self-attention call: a pure plan from settings + call.

A method is a function `plan(settings, call) -> Runner | None`. A Runner takes the layer
module and its input x [B, h*w, C] and returns the attention output before `to_out`. None
means "leave this call to the original forward", which is what keeps neutral settings
bit-identical. A new method is one module with a plan function added to PLANNERS.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from . import schedule
from .agentsd import plan_agentsd
from .nearsighted import tiled_attention
from .settings import NearSightedSettings, PoolBlock, SlothSettings
from .slothful import layer_stride, pooling_for, slothful_attention
from .tiling import offset_rng, tile_grid, with_offsets

Runner = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerCall:
    """One self-attention call, as the planners see it."""

    block: str  # "input", "middle" or "output"
    level: int  # 0 = the shallowest level of this UNet that has self-attention
    h: int  # token grid of this layer, in latent cells at its own resolution
    w: int
    batch: int
    step: int  # sampling step of the pass, 0-based
    total: int  # steps in this pass
    seed: int

    @property
    def progress(self) -> float:
        return schedule.progress(self.step, self.total)


def _pool_block(block: str, keep_middle: bool, input_block: PoolBlock, output_block: PoolBlock):
    if block == "output":
        return output_block
    if block == "middle" and keep_middle:
        return None
    return input_block  # the middle block, when not kept, uses the input settings


def plan_slothful(settings: SlothSettings, call: LayerCall) -> Optional[Runner]:
    s = settings.slothful
    if not s.enabled:
        return None
    block = _pool_block(call.block, s.keep_middle, s.input, s.output)
    if block is None:
        return None
    stride = layer_stride(block, call.level, call.progress, s.peak_time, s.time_decay)
    pooling = pooling_for(block, stride, call.h, call.w)
    if pooling is None:
        return None
    return partial(_run_slothful, h=call.h, w=call.w, pooling=pooling, upcast=settings.upcast_attention)


def _run_slothful(module, x, *, h, w, pooling, upcast):
    return slothful_attention(module, x, h, w, pooling, upcast)


def plan_tile(settings: SlothSettings, call: LayerCall) -> Optional[Runner]:
    s = settings.tile
    if not s.enabled or call.level >= s.max_depth:
        return None
    grid = tile_grid(call.h, call.w, s.tile_size)
    if grid.tiles == 1:
        return None
    grid = with_offsets(grid, offset_rng(call.seed, call.step, call.level))
    global_stride = grid.tiles / s.global_ratio if s.global_ratio > 0 else None
    return partial(tiled_attention, grid=grid, global_stride=global_stride, pool_block=None,
                   pool_stride=1.0, upcast=settings.upcast_attention)


def nearsighted_shape(s: NearSightedSettings, progress: float):
    """(tile_size, global_ratio) at this point of the schedule: base -> peak by time_ratio."""
    tr = schedule.time_ratio(progress, s.peak_time, s.time_decay)
    tile_size = schedule.round_half_up(schedule.lerp(s.base_tile_size, s.peak_tile_size, tr))
    return tile_size, schedule.lerp(s.base_global_ratio, s.peak_global_ratio, tr)


def plan_nearsighted(settings: SlothSettings, call: LayerCall) -> Optional[Runner]:
    s = settings.nearsighted
    if not s.enabled:
        return None
    block = _pool_block(call.block, s.keep_middle, s.input, s.output)
    stride = layer_stride(block, call.level, call.progress, s.peak_time, s.time_decay) if block else 0.0
    if call.level < s.max_depth:
        tile_size, global_ratio = nearsighted_shape(s, call.progress)
        grid = tile_grid(call.h, call.w, tile_size)
        if grid.tiles > 1:
            grid = with_offsets(grid, offset_rng(call.seed, call.step, call.level))
            global_stride = max(1.0, stride) * grid.tiles / global_ratio if global_ratio > 0 else None
            return partial(tiled_attention, grid=grid, global_stride=global_stride, pool_block=block,
                           pool_stride=stride, upcast=settings.upcast_attention)
    # deeper levels, and levels that fit in one tile, get plain Slothful
    pooling = pooling_for(block, stride, call.h, call.w) if block else None
    if pooling is None:
        return None
    return partial(_run_slothful, h=call.h, w=call.w, pooling=pooling, upcast=settings.upcast_attention)


# AgentSD first: it takes the layers it merges at this step, Slothful (if on) the rest
PLANNERS = [plan_agentsd, plan_slothful, plan_tile, plan_nearsighted]


def plan_layer(settings: SlothSettings, call: LayerCall) -> Optional[Runner]:
    for planner in PLANNERS:
        runner = planner(settings, call)
        if runner is not None:
            return runner
    return None


def any_active(settings: SlothSettings) -> bool:
    """Could any method change the UNet's output? False = install nothing at all."""
    s = settings
    slothful = s.slothful.enabled and max(s.slothful.input.slothful, s.slothful.output.slothful) > 1
    agentsd = s.agentsd.enabled and max(s.agentsd.early.ratio, s.agentsd.late.ratio) > 0
    sag = s.sag.enabled and s.sag.scale != 0
    return slothful or s.tile.enabled or s.nearsighted.enabled or agentsd or sag
