"""What the methods did during one sampling pass, as plain data: the "Show Sloth maps" recording.

A front end that wants maps puts one `MapRecorder` on the pass's SlothPatch (``patch.recorder``);
the default is None, and then no code of this module runs, no hook exists and the images are
bit-identical to a run without it. With a recorder:

- SlothPatch calls `MapRecorder.layer` once per self-attention call it plans, with the call and
  the runner the planners chose (None = left to the original forward). From the runner the
  recorder reads what actually runs: the K/V budget of the call (keys per query, as a share of
  the unpatched layer's keys) and, for tiled calls, the tile grid with this step's seams and the
  global sample. The runner is not touched.
- A perturbed-attention guidance (PAG, SEG: lib_sloth.perturbed) calls `MapRecorder.guidance` once
  per guided step with how far it moved the prediction (x0); the first image's |guided - cfg|,
  averaged over the channels, is kept for its first, middle and last guided step.
- SagPass calls `MapRecorder.sag` once per guided step, with the map it is about to use; the
  recorder keeps the first image's received-attention grid and the engine's own mask
  (`sag_mask.mask_from_received`, what `attention_mask` computes) at the latent size.

Only the first image of the batch is kept, and only a few steps (budget: one float per level
and step; tiles: two steps per tiled level; SAG: the first, middle and last guided step).
Memory bound, batch 8 at 1024 x 1024 (latent 128 x 128): SAG 3 x (grid h*w fp32 + latent
H*W bool) = 3 x (32*32*4 + 128*128) B = 60 KiB on SDXL (SD1.x: 51 KiB); tiles 6 small records;
budget 7 levels x steps floats (150 steps: ~40 KiB of Python floats); PAG and SEG 3 x H*W fp32
each (192 KiB at 128 x 128). Under 0.6 MiB per pass, whatever the batch size, all on the CPU;
transient work per SAG step: one sum over the first image's heads x N x N map (SDXL 1024^2:
20 x 1024^2 floats read, 80 KiB written); per PAG / SEG step one |difference| of the first image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .agentsd import agentsd_attention
from .geometry import window_1d, window_2d
from .layer_call import LayerCall
from .nearsighted import nearsighted_shape, tiled_attention
from .sag import SagPass
from .sag_mask import mask_from_received, mid_grid, received_attention
from .schedule import progress, round_half_up
from .settings import SlothSettings
from .slothful import Pooling, pooling_for, run_slothful
from .tiling import TileGrid

LevelKey = Tuple[str, int]  # (block, level): "input"/"middle"/"output", 0 = shallowest attention level
BLOCK_ORDER = {"input": 0, "middle": 1, "output": 2}


@dataclass(frozen=True)
class TileRecord:
    """One tiled level at one step: exactly the grid the engine's tiled attention received."""

    step: int
    level: int
    grid: TileGrid  # h x w cells of the level, tile shape and this step's seam offsets
    global_window: Optional[Tuple[int, int]]  # (gy, gx): every gy-th row and gx-th column; None = not 2D
    tile_size: int  # the setting at this step (Near-sighted Attention moves it from base to peak)
    global_ratio: float
    global_1d: Optional[int] = None  # 1D pool modes: every g-th token of the row-major sequence

    def tile_boxes(self) -> List[Tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) in cells, end exclusive, of every tile, row by row."""
        boxes = []
        for rect in self.grid.rects():
            for i in range(rect.ky):
                for j in range(rect.kx):
                    y0, x0 = rect.y0 + i * rect.bh, rect.x0 + j * rect.bw
                    boxes.append((y0, x0, y0 + rect.bh, x0 + rect.bw))
        return sorted(boxes)

    def global_cells(self) -> List[Tuple[int, int]]:
        """(y, x) of every cell in the global sample (what each tile also attends to)."""
        if self.global_1d is not None:
            w = self.grid.w
            return [divmod(i, w) for i in range(0, self.grid.h * w, self.global_1d)]
        if self.global_window is None:
            return []
        gy, gx = self.global_window
        return [(y, x) for y in range(0, self.grid.h, gy) for x in range(0, self.grid.w, gx)]


@dataclass(frozen=True)
class SagRecord:
    """SAG's map of the first uncond image at one guided step."""

    step: int
    received: torch.Tensor  # [h, w] fp32: attention each key token receives (mean over heads, sum over queries)
    mask: torch.Tensor  # [H, W] bool at the latent size: exactly the cells the engine blurs
    threshold: float
    blur_sigma: float

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.received, self.mask))


@dataclass(frozen=True)
class GuidanceRecord:
    """Where one guidance moved the first image's prediction at one guided step."""

    step: int
    moved: torch.Tensor  # [H, W] fp32 at the latent size: |guided - cfg| in x0, mean over the channels

    @property
    def nbytes(self) -> int:
        return self.moved.numel() * self.moved.element_size()


@dataclass
class MapRecorder:
    """The maps of one sampling pass (see the module docstring). Not thread-shared; lives on the pass."""

    settings: SlothSettings
    seed: int = 0
    total: int = 1  # steps of the pass, as the last recorded call saw them
    latent_hw: Optional[Tuple[int, int]] = None
    grids: Dict[LevelKey, Tuple[int, int]] = field(default_factory=dict)  # token grid of each level seen
    budget: Dict[LevelKey, Dict[int, Optional[float]]] = field(default_factory=dict)  # step -> share (None: unknown)
    tiles: Dict[Tuple[int, int], TileRecord] = field(default_factory=dict)  # (step, level) -> record
    sag_first: Optional[SagRecord] = None
    sag_middle: Optional[SagRecord] = None
    sag_last: Optional[SagRecord] = None
    # guidance name ("PAG", "SEG") -> its first, middle and last guided step ("first" / "middle" / "last")
    guided: Dict[str, Dict[str, GuidanceRecord]] = field(default_factory=dict)

    # ---- recording (called by the engine) ----------------------------------------------------
    def layer(self, call: LayerCall, runner, latent_hw: Optional[Tuple[int, int]] = None) -> None:
        """One planned self-attention call; `runner` None = the original forward ran."""
        key = (call.block, call.level)
        self.total = call.total
        if latent_hw is not None:
            self.latent_hw = tuple(latent_hw)
        self.grids.setdefault(key, (call.h, call.w))
        steps = self.budget.setdefault(key, {})
        if call.step in steps:  # every layer of a level shares its plan; cond/uncond calls too
            return
        steps[call.step] = kv_share(runner, call)
        if getattr(runner, "func", None) is tiled_attention and call.step in self.tile_steps(call.total):
            self.tiles.setdefault((call.step, call.level), self._tile_record(call, runner))

    def sag(self, step: int, total: int, sag_map, latent_hw: Tuple[int, int]) -> None:
        """One guided SAG step, with the map the guidance is about to use (first image kept)."""
        heads = sag_map.heads
        probs = sag_map.probs[:heads]  # rows are image-major: the first uncond image's heads
        grid = sag_map.grid or mid_grid(probs.shape[-1], latent_hw)
        s = self.settings.sag
        with torch.no_grad():  # one sum over the map; the mask is the engine's own function of it
            summed = received_attention(probs, heads)
            mask = mask_from_received(summed, latent_hw, s.threshold, grid)[0, 0] > 0.5
            received = summed[0].reshape(grid)
        record = SagRecord(step, received.detach().float().cpu(), mask.cpu(), s.threshold, s.blur_sigma)
        self.total, self.latent_hw = total, tuple(latent_hw)
        if self.sag_first is None:
            self.sag_first = record
        target = (total - 1) / 2
        if self.sag_middle is None or abs(step - target) < abs(self.sag_middle.step - target):
            self.sag_middle = record
        self.sag_last = record

    def guidance(self, name: str, step: int, total: int, moved_x0: torch.Tensor) -> None:
        """One guided step of a perturbed-attention guidance: moved_x0 [B, C, H, W] = guided - cfg in x0
        (the first image is kept, as |.| averaged over the channels)."""
        with torch.no_grad():
            moved = moved_x0[0].detach().float().abs().mean(dim=0).cpu()
        record = GuidanceRecord(step, moved)
        self.total, self.latent_hw = total, tuple(moved.shape)
        kept = self.guided.setdefault(name, {})
        kept.setdefault("first", record)
        target = (total - 1) / 2
        if "middle" not in kept or abs(step - target) < abs(kept["middle"].step - target):
            kept["middle"] = record
        kept["last"] = record

    # ---- reading (called by the drawing code) --------------------------------------------------
    @property
    def empty(self) -> bool:
        return not self.budget and self.sag_first is None and not self.guided

    def guidance_records(self, name: str) -> List[GuidanceRecord]:
        """First, middle and last guided step of one guidance, each once, in step order."""
        out = {r.step: r for r in self.guided.get(name, {}).values()}
        return [out[s] for s in sorted(out)]

    def sag_records(self) -> List[SagRecord]:
        """First, middle and last guided step, each once, in step order."""
        out: Dict[int, SagRecord] = {}
        for r in (self.sag_first, self.sag_middle, self.sag_last):
            if r is not None:
                out.setdefault(r.step, r)
        return [out[s] for s in sorted(out)]

    def tile_steps(self, total: int) -> Tuple[int, ...]:
        """The steps whose tiles are kept: the peak and the step farthest from it.

        Near-sighted Tile has no schedule (only its seams move): its first and last step.
        """
        last = max(total - 1, 0)
        if self.settings.nearsighted.enabled:
            peak = min(last, max(0, round_half_up(self.settings.nearsighted.peak_time * last)))
            far = 0 if peak - 0 >= last - peak else last
            return (peak, far) if far != peak else (peak,)
        return (0, last) if last else (0,)

    def tiled_levels(self) -> List[int]:
        return sorted({level for (_, level) in self.tiles})

    def tile_records(self, level: int) -> List[TileRecord]:
        """The kept records of one level, in tile_steps order (peak first for Near-sighted Attention)."""
        order = self.tile_steps(self.total)
        found = [r for (step, lv), r in self.tiles.items() if lv == level]
        return sorted(found, key=lambda r: order.index(r.step) if r.step in order else len(order) + r.step)

    def levels(self) -> List[LevelKey]:
        """Every level seen, input blocks shallow to deep, the middle, output blocks deep to shallow."""
        return sorted(self.budget, key=lambda k: (BLOCK_ORDER.get(k[0], 3), k[1] if k[0] != "output" else -k[1]))

    def budget_series(self, key: LevelKey) -> List[Optional[float]]:
        """The share at every step of the pass (None where nothing was recorded)."""
        steps = self.budget.get(key, {})
        return [steps.get(i) for i in range(self.total)]

    @property
    def nbytes(self) -> int:
        """Bytes held in tensors (the rest is a few hundred small Python objects)."""
        kept = [self.sag_first, self.sag_middle, self.sag_last, *(r for g in self.guided.values() for r in g.values())]
        return sum(r.nbytes for r in {id(r): r for r in kept if r is not None}.values())

    def _tile_record(self, call: LayerCall, runner) -> TileRecord:
        kw = runner.keywords
        grid: TileGrid = kw["grid"]
        stride = kw["global_stride"]
        window = step_1d = None
        if stride is not None and _global_is_1d(kw):
            step_1d = window_1d(stride, grid.h * grid.w)
        elif stride is not None:
            window = window_2d(stride, grid.h, grid.w)
        if self.settings.nearsighted.enabled:
            tile_size, ratio = nearsighted_shape(self.settings.nearsighted, progress(call.step, call.total))
        else:
            tile_size, ratio = self.settings.tile.tile_size, self.settings.tile.global_ratio
        return TileRecord(call.step, call.level, grid, window, int(tile_size), float(ratio), step_1d)


# ---- K/V budget of one call ------------------------------------------------------------------
def reduced_tokens(pooling: Pooling, h: int, w: int) -> int:
    """K/V tokens Slothful pooling leaves of an h x w grid (see slothful.reduce_tokens)."""
    sy, sx = pooling.window
    if pooling.mode.startswith("2D"):
        return math.ceil(h / sy) * math.ceil(w / sx)
    return math.ceil(h * w / sx)


def kv_share(runner, call: LayerCall) -> Optional[float]:
    """Keys each query attends to, averaged over the queries, as a share of the layer's h*w keys.

    1.0 when the original forward runs (runner None) or the runner is full attention; None for a
    runner this module does not know (a new method: add it here).
    """
    n = call.h * call.w
    if runner is None or n == 0:
        return 1.0
    func = getattr(runner, "func", None)
    kw = getattr(runner, "keywords", None) or {}
    if func is run_slothful:
        return reduced_tokens(kw["pooling"], call.h, call.w) / n
    if func is agentsd_attention:
        plan = kw["plan"]
        # merged queries attend to the agents (agent attention) or to every merged token (ToMe)
        return (plan.agents if plan.agent_r else n - plan.r) / n
    if func is tiled_attention:
        return _tiled_share(kw, call.h, call.w)
    if isinstance(getattr(func, "__self__", None), SagPass):
        return 1.0  # SAG's recorded layer: full attention (with an explicit map for the uncond rows)
    return None


def _tiled_share(kw, h: int, w: int) -> float:
    grid: TileGrid = kw["grid"]
    stride, block, pool_stride = kw["global_stride"], kw["pool_block"], kw["pool_stride"]
    global_keys = 0
    if stride is not None and _global_is_1d(kw):
        global_keys = math.ceil(h * w / window_1d(stride, h * w))  # every g-th token (nearsighted.global_sources)
    elif stride is not None:
        gy, gx = window_2d(stride, h, w)
        global_keys = math.ceil(h / gy) * math.ceil(w / gx)
    pairs = 0  # sum over queries of the keys each sees
    for rect in grid.rects():
        cells = rect.bh * rect.bw
        local = cells
        if block is not None and pool_stride > 1:
            pooling = pooling_for(block, pool_stride, rect.bh, rect.bw)
            if pooling is not None:
                local = reduced_tokens(pooling, rect.bh, rect.bw)
        pairs += rect.tiles * cells * (local + global_keys)
    return pairs / float(h * w) ** 2


def _global_is_1d(kw) -> bool:
    """Near-sighted Attention with a 1D pool mode picks its global sample from the token row."""
    block = kw.get("pool_block")
    return block is not None and block.mode.startswith("1D")
