"""What a method's planner sees of one self-attention call, and what it hands back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from . import schedule

# A Runner takes the layer module and its input x [B, h*w, C] and returns the attention output
# [B, h*w, heads*d] before `to_out` (the patch applies to_out, per token).
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
    upcast: bool = False  # compute rewritten attention in fp32 (the global upcast_attention)

    @property
    def progress(self) -> float:
        return schedule.progress(self.step, self.total)


# A planner decides for one method: plan(its settings block, call) -> Runner, or None to leave
# the call to the original forward (which is what keeps neutral settings bit-identical).
Planner = Callable[[Any, LayerCall], Optional[Runner]]
