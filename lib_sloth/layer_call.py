"""What a method's planner sees of one self-attention call (`LayerCall`), and what it hands back (`Plan`)."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from . import schedule


class Plan(abc.ABC):
    """A method's decision for one self-attention call: a small frozen dataclass.

    `run(layer, x, k_in, v_in, upcast)` computes the layer's output [B, N, query_dim] (to_out
    applied) for x [B, N, C]. `layer` exposes to_q, to_k, to_v, a callable to_out and heads.
    k_in / v_in are what K and V are computed from (x itself for a plain layer: `k_in is x`; A1111
    hypernetworks give other tensors), and every plan projects K from k_in and V from v_in, pooled,
    tiled or merged exactly as it treats x. `upcast` asks for fp32 attention.

    The facts the maps and the bench read come from the plan, never from its internals:
    `keys_per_query` and `tiles`.
    """

    @abc.abstractmethod
    def run(self, layer, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, upcast: bool) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def keys_per_query(self, h: int, w: int) -> float:
        """Keys each query of an h x w layer attends to, averaged over the queries (h*w = full)."""

    def tiles(self):
        """The tiling this plan runs (a tiling.TileLayout), or None when it does not tile."""
        return None


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


# A planner decides for one method: plan(its settings block, call) -> Plan, or None to leave
# the call to the original forward (which is what keeps neutral settings bit-identical).
Planner = Callable[[Any, LayerCall], Optional[Plan]]
