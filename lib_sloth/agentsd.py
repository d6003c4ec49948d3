"""AgentSD: ToMe token merging plus agent attention in self-attention, early/late step schedule.

After Han et al., "Agent Attention" (ECCV 2024), whose AgentSD builds on tomesd. For a merged layer
one patched attn1 call does

    x [B, N, C] (norm1 output) --merge--> [B, M, C] --(agent) attention, to_out--> [B, M, C] --unmerge--> [B, N, C]

Tokens are matched on the transformer block's input (LayerCall.block_input, kept by the patch's
pre-hook on the block; norm1(x) only when no block input is at hand), and to_out runs on the
merged tokens before the unmerge, as tomesd's ToMeBlock does (`AgentSDPlan.run` applies it).
With agents A = to_q(merge_agents(x)):
    out = softmax(Q·Aᵀ·d^(-½·k_scale2)) · softmax(A·Kᵀ·d^-½) · V + k_shortcut·V.
`plan_agentsd` returns None (the original forward) for layers and steps it does not merge.
Why the metric, seeding, levels and schedule are what they are: docs/design.md.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange

from .attention import attend
from .fields import SettingsError, Validated, nested, setting, validate
from .layer_call import LayerCall, Plan
from .tome import match

AGENT_MAX_DOWNSAMPLE = (1, 2, 4, 8)


@dataclass(frozen=True)
class AgentPhase:
    """ToMe + agent settings for one part of the schedule."""

    sx: int = setting(4, 1, 8, integer=True, hint="Merge cell width in tokens")
    sy: int = setting(4, 1, 8, integer=True, hint="Merge cell height in tokens")
    ratio: float = setting(0.4, 0.0, 0.9375,
                           hint="Share of tokens merged away before attention; 0 = off for this phase")
    agent_ratio: float = setting(0.95, 0.0, 1.0,
                                 hint="Share merged away to make the agent tokens; agents only when far fewer than tokens")

    def __post_init__(self):
        validate(self)
        cap = 1.0 - 1.0 / (self.sx * self.sy)
        if self.ratio > cap + 1e-9:
            raise SettingsError("ratio", f"={self.ratio} is out of range for sx={self.sx}, sy={self.sy}: "
                                f"at most 1 - 1/(sx*sy) = {cap:.4f} of the tokens can be merged")


def _late_phase() -> AgentPhase:
    return AgentPhase(sx=2, sy=2, ratio=0.4, agent_ratio=0.5)


@dataclass(frozen=True)
class AgentSDSettings(Validated):
    enabled: bool = setting(False, hint="Token merging with agent attention: faster, lower memory")
    max_downsample: int = setting(1, choices=AGENT_MAX_DOWNSAMPLE, integer=True,
                                  hint="Merge in levels down to this downsample, counted from the shallowest attention level")
    switch_at: float = setting(0.4, 0.0, 1.0,
                               hint="Share of the steps that use the early settings; the rest use the late ones")
    use_rand: bool = setting(True, hint="Random destination per merge cell (seeded); off = always the first cell")
    k_scale2: float = setting(0.3, 0.0, 1.0, hint="Temperature of the query-to-agent softmax")
    k_shortcut: float = setting(0.075, 0.0, 1.0, hint="How much of the plain values is added back")
    fp32: bool = setting(False, hint="Compute the agent similarities in fp32 (needed for SD2.x in fp16)")
    early: AgentPhase = nested(AgentPhase, "Early steps")
    late: AgentPhase = nested(_late_phase, "Late steps")

    @property
    def active(self) -> bool:
        """Whether these settings can merge anything (a phase with ratio 0 merges nothing)."""
        return self.enabled and max(self.early.ratio, self.late.ratio) > 0


@dataclass(frozen=True)
class AgentLayerPlan:
    """What AgentSD does to one self-attention call (pure data: tests and notes read it)."""

    phase: str  # "early" or "late"
    h: int  # token grid of the layer
    w: int
    sx: int  # merge cell, in tokens
    sy: int
    r: int  # tokens merged away before attention (1 <= r <= src tokens)
    agent_r: int  # tokens merged away to form the agents; 0 = plain ToMe attention
    seed: Optional[int]  # seed of the random dst choice; None = first cell position

    @property
    def agents(self) -> int:
        return self.h * self.w - self.agent_r if self.agent_r else 0


def phase_at(s: AgentSDSettings, step: int, total: int) -> Tuple[str, AgentPhase]:
    """("early", s.early) while step < switch_at·total, else ("late", s.late). step is 0-based.

    The 1e-9 forgives float noise: 0.3·10 = 3.0000000000000004 must still switch at step 3.
    """
    return ("early", s.early) if step + 1e-9 < s.switch_at * total else ("late", s.late)


def merge_seed(seed: int, step: int, level: int) -> int:
    """Seed of the dst choice: a stable hash of (generation seed, step, level), 63 bits."""
    digest = hashlib.blake2b(f"sloth-agentsd:{seed}:{step}:{level}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def layer_plan(s: AgentSDSettings, call: LayerCall) -> Optional[AgentLayerPlan]:
    """AgentSD's plan for this call, or None when it leaves the call alone."""
    if not s.enabled or 2 ** call.level > s.max_downsample:
        return None
    name, phase = phase_at(s, call.step, call.total)
    if phase.ratio <= 0:
        return None
    n = call.h * call.w
    cells = (call.h // phase.sy) * (call.w // phase.sx)
    most = n - cells if cells else 0  # every src can merge; nothing can without a dst
    r = min(int(n * phase.ratio), most)
    if r <= 0:
        return None
    agent_r = min(int(n * phase.agent_ratio), most)
    # agents pay off only when far fewer than the merged tokens (the authors' rule)
    if not 2 * (n - agent_r) < n - r:
        agent_r = 0
    seed = merge_seed(call.seed, call.step, call.level) if s.use_rand and call.batch % 2 == 0 else None
    return AgentLayerPlan(name, call.h, call.w, phase.sx, phase.sy, r, agent_r, seed)


@dataclass(frozen=True, eq=False)
class AgentSDPlan(Plan):
    """AgentSD on one call: merge -> (agent) attention -> to_out -> unmerge, as `layer` says."""

    layer: AgentLayerPlan
    k_scale2: float
    k_shortcut: float
    fp32: bool
    metric: Optional[torch.Tensor]  # the tokens compared for merging (the block input); None = x

    def run(self, layer, x, k_in, v_in, upcast):
        return agentsd_attention(layer, x, k_in, v_in, plan=self.layer, k_scale2=self.k_scale2,
                                 k_shortcut=self.k_shortcut, upcast=self.fp32 or upcast, metric=self.metric,
                                 project=True)

    def keys_per_query(self, h: int, w: int) -> float:
        # merged queries attend to the agents (agent attention) or to every merged token (ToMe)
        plan = self.layer
        return float(plan.agents if plan.agent_r else h * w - plan.r)


def plan_agentsd(s: AgentSDSettings, call: LayerCall) -> Optional[AgentSDPlan]:
    plan = layer_plan(s, call)
    if plan is None:
        return None
    return AgentSDPlan(plan, s.k_scale2, s.k_shortcut, s.fp32, call.block_input)


def agentsd_attention(module, x: torch.Tensor, k_in: Optional[torch.Tensor] = None,
                      v_in: Optional[torch.Tensor] = None, *, plan: AgentLayerPlan, k_scale2: float,
                      k_shortcut: float, upcast: bool, metric: Optional[torch.Tensor] = None,
                      project: bool = False) -> torch.Tensor:
    """Merge -> (agent) attention -> unmerge on x [B, h*w, C] (norm1's output).

    k_in / v_in: what K and V are computed from (None = x; an A1111 hypernetwork gives others),
    merged like x. metric: the tokens compared for merging, [B, h*w, C'] (the block input); None =
    x itself. Returns [B, h*w, inner] before to_out, or with `project` the layer output: to_out
    applied to the merged tokens, then unmerged.
    """
    k_in = x if k_in is None else k_in
    v_in = x if v_in is None else v_in
    generator = None if plan.seed is None else torch.Generator().manual_seed(plan.seed)
    matching = match(x if metric is None else metric, plan.h, plan.w, plan.sx, plan.sy, generator)
    merge, unmerge = matching.merging(plan.r)
    merged = merge(x)
    k_merged = merged if k_in is x else merge(k_in)
    v_merged = merged if v_in is x else (k_merged if v_in is k_in else merge(v_in))
    q, k, v = module.to_q(merged), module.to_k(k_merged), module.to_v(v_merged)
    if plan.agent_r:
        merge_agents, _ = matching.merging(plan.agent_r)
        agents = module.to_q(merge_agents(x))  # agents are queries first (they gather the values)
        out = agent_attention(q, k, v, agents, module.heads, k_scale2, k_shortcut, upcast)
    else:
        out = attend(q, k, v, module.heads, upcast)
    return unmerge(module.to_out(out) if project else out)


def agent_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, agents: torch.Tensor, heads: int,
                    k_scale2: float, k_shortcut: float, upcast: bool = False) -> torch.Tensor:
    """Agent attention.

    q, k, v: [B, M, heads*d]; agents: [B, A, heads*d] (already projected by to_q)
    -> [B, M, heads*d] in q's dtype:
        softmax(Q·Aᵀ·d^(-½·k_scale2)) · (softmax(A·Kᵀ·d^-½) · V) + k_shortcut·V
    `upcast`: both products and softmaxes in fp32.
    """
    dtype = q.dtype
    if upcast:
        q, k, v, agents = q.float(), k.float(), v.float(), agents.float()
    q, k, v, a = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v, agents))
    d = q.shape[-1]
    agent_v = F.scaled_dot_product_attention(a, k, v)  # default scale d^-½
    out = F.scaled_dot_product_attention(q, a, agent_v, scale=d ** (-0.5 * k_scale2))
    out = out + k_shortcut * v
    return rearrange(out, "b h n d -> b n (h d)").to(dtype)
