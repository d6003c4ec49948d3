"""What a method's planner sees of one self-attention call, and what it hands back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from . import schedule

# A Runner takes the layer module and its input x [B, h*w, C] and returns the attention output
# [B, h*w, heads*d] before `to_out` (the patch applies to_out, per token). A runner with a true
# `projects_out` attribute returns the layer's final output itself (AgentSD applies to_out to the
# merged tokens, before unmerging, as tomesd does).
Runner = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TokenGrid:
    """Where a layer's tokens sit: an h x w grid, in latent cells at the layer's own resolution."""

    h: int
    w: int
    level: int  # 0 = the shallowest level of this UNet that has self-attention


@dataclass(frozen=True)
class LayerCall:
    """One self-attention call, as the planners (and the patch's interceptors) see it."""

    block: str  # "input", "middle" or "output"
    grid: Optional[TokenGrid]  # None = the tokens match no grid of the latent (merged or cropped
    # upstream): only interceptors see such calls, planners never do
    batch: int
    step: int  # sampling step of the pass, 0-based
    total: int  # steps in this pass
    seed: int
    upcast: bool = False  # compute rewritten attention in fp32 (the global upcast_attention)
    # the owning transformer block's input x (before norm1) for this call, [B, h*w, C]; None when the
    # block was not entered through its forward. ToMe/AgentSD compare tokens on it.
    block_input: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    @property
    def h(self) -> int:
        return self._known().h

    @property
    def w(self) -> int:
        return self._known().w

    @property
    def level(self) -> int:
        return self._known().level

    @property
    def progress(self) -> float:
        return schedule.progress(self.step, self.total)

    def _known(self) -> TokenGrid:
        if self.grid is None:
            raise ValueError(f"the token grid of this {self.block} call is unknown; only interceptors see it")
        return self.grid


# A planner decides for one method: plan(its settings block, call) -> Runner, or None to leave
# the call to the original forward (which is what keeps neutral settings bit-identical).
Planner = Callable[[Any, LayerCall], Optional[Runner]]
