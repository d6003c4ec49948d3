"""The adapter's one coupling to the engine: plan one attn1 call, run the plan.

Everything else in lib_sloth.diffusers talks to the engine only through `EngineState` and
`plan_call` / `run_plan`, so a change of the engine's call API is an edit of this module.
Today's engine API: interceptors (SAG's map recording) first, then the method table's planners
(`methods.plan_layer`); a Runner returns the attention before to_out unless it `projects_out`.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, List, Optional, Tuple

import torch

from ..agentsd import merged_by_tomesd, without_agentsd
from ..layer_call import LayerCall, Runner
from ..layers import LayerIndex, LayerInfo
from ..methods import plan_layer
from ..settings import SlothSettings


class EngineState:
    """What the engine reads per call, for one `apply` block: settings, seed, the layer index,
    the schedule position, the current UNet call's latent size, and the per-run outputs (notes,
    rewritten-call counts, the maps recorder). Also what `SagPass` expects of its `patch`
    (interceptors, notes, recorder, step, total, settings)."""

    def __init__(self, settings: SlothSettings, seed: int, index: LayerIndex):
        self.settings = settings
        self.seed = int(seed)
        self.index = index
        self.step, self.total = 0, 1
        self.latent_hw: Optional[Tuple[int, int]] = None  # set per UNet call; None = outside one
        self.interceptors: List[Callable] = []
        self.notes: List[str] = []
        self.recorder = None  # a maps.MapRecorder when maps were asked for
        self.rewritten: Counter = Counter()  # layer name -> calls rewritten
        self.plan_settings = settings  # what the planners see this UNet call (see unet_call_started)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def set_step(self, step: int, total: int) -> None:
        if int(total) < 1 or int(step) < 0:
            raise ValueError(f"step={step}, total={total}: need 0 <= step and total >= 1")
        self.step, self.total = int(step), int(total)

    def unet_call_started(self, latent_hw: Tuple[int, int]) -> None:
        """A UNet forward begins on a latent of `latent_hw` (H, W)."""
        self.latent_hw = tuple(latent_hw)
        self.plan_settings = self.settings
        if self.settings.agentsd.enabled and any(merged_by_tomesd(b) for b in self.index.owners):
            self.note("AgentSD skipped: token merging (tomesd) is applied to this UNet, and tokens must not "
                      "be merged twice; remove tomesd's patch to use AgentSD")
            self.plan_settings = without_agentsd(self.settings)

    def unet_call_ended(self) -> None:
        self.latent_hw = None


def plan_call(state: EngineState, layer, info: LayerInfo, x: torch.Tensor, upcast: bool,
              block_input: Optional[torch.Tensor]) -> Optional[Runner]:
    """The plan for one plain self-attention call of `layer` on x [B, N, C], or None (leave it to
    the installed processor). `layer` is the view the rewrites compute with (to_q, to_k, to_v,
    heads, callable to_out)."""
    if state.latent_hw is None:
        return None
    grid = state.index.grid(x.shape[1], state.latent_hw)
    if grid is None:
        state.note(f"{info.name}: {x.shape[1]} tokens match no grid of the {state.latent_hw[0]}x"
                   f"{state.latent_hw[1]} latent (merged by another patch?); left unchanged")
        if not state.interceptors:
            return None
    if block_input is not None and block_input.shape[:2] != x.shape[:2]:
        block_input = None
    call = LayerCall(info.block, grid, x.shape[0], state.step, state.total, state.seed,
                     bool(upcast or state.settings.upcast_attention), block_input)
    runner = None
    for interceptor in state.interceptors:
        runner = interceptor(layer, info, x, call)
        if runner is not None:
            break
    else:
        runner = plan_layer(state.plan_settings, call) if grid is not None else None
    if runner is not None:
        state.rewritten[info.name] += 1
    if state.recorder is not None and grid is not None:
        state.recorder.layer(call, runner, state.latent_hw)
    return runner


def run_plan(runner: Runner, layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's output for x [B, N, C] (to_out applied) from a plan of `plan_call`."""
    out = runner(layer, x)
    return out if getattr(runner, "projects_out", False) else layer.to_out(out)
