"""What the methods did during one sampling pass, as plain data: the "Show Sloth maps" recording.

A front end that wants maps gives the pass's SlothPatch one `MapRecorder` (its `recorder`); the
default is None, and then no code of this module runs, no hook exists and the images are
bit-identical to a run without it. With a recorder:

- SlothPatch calls `MapRecorder.layer` once per self-attention call it plans, with the call and
  the plan chosen (None = left to the original forward). The recorder asks the plan for its facts,
  never for its internals: the K/V budget of the call (`Plan.keys_per_query`, as a share of the
  unpatched layer's keys) and, for tiled calls, the tile layout with this step's seams and the
  global sample (`Plan.tiles`).
- A guidance method calls `MapRecorder.overlay` once per guided step with what it wants drawn over
  the image (an `Overlay`: a heat grid and the cells it acted on; SAG: received attention and its
  blur mask). The recorder keeps the first, middle and last guided step of each guidance.

Only the first image of the batch is kept, and only a few steps (budget: one float per level
and step; tiles: two steps per tiled level; overlays: three steps per guidance).
Memory bound, batch 8 at 1024 x 1024 (latent 128 x 128): SAG 3 x (grid h*w fp32 + latent
H*W bool) = 3 x (32*32*4 + 128*128) B = 60 KiB on SDXL (SD1.x: 51 KiB); tiles 6 small records;
budget 7 levels x steps floats (150 steps: ~40 KiB of Python floats). Under 0.2 MiB per pass,
whatever the batch size, all on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from .layer_call import LayerCall, Plan
from .schedule import round_half_up
from .tiling import TileGrid, TileLayout

LevelKey = Tuple[str, int]  # (block, level): "input"/"middle"/"output", 0 = shallowest attention level
BLOCK_ORDER = {"input": 0, "middle": 1, "output": 2}


@dataclass(frozen=True)
class TileRecord:
    """One tiled level at one step: exactly the layout the plan tiled with."""

    step: int
    level: int
    layout: TileLayout

    @property
    def grid(self) -> TileGrid:  # h x w cells of the level, tile shape and this step's seam offsets
        return self.layout.grid

    @property
    def tile_size(self) -> int:
        return self.layout.tile_size

    @property
    def global_ratio(self) -> float:
        return self.layout.global_ratio

    @property
    def global_window(self) -> Optional[Tuple[int, int]]:
        return self.layout.global_window

    @property
    def global_1d(self) -> Optional[int]:
        return self.layout.global_1d

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
class Overlay:
    """What a guidance method shows of one guided step, over the first image."""

    heat: torch.Tensor  # [h, w] fp32 on the CPU, drawn as a heat map over the image
    mask: torch.Tensor  # [H, W] bool at the latent size: the cells it acted on (outlined)
    tag: str  # its settings, for the panel: "threshold 1, blur 2"
    legend: str  # what heat and outline mean: "received attention (heat) and blurred cells (cyan)"
    marked: str = "marked"  # what the mask's share is called on each panel: "12% blurred"


@dataclass(frozen=True)
class OverlayRecord:
    """One guidance method's overlay at one guided step."""

    step: int
    overlay: Overlay

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.overlay.heat, self.overlay.mask))


@dataclass
class MapRecorder:
    """The maps of one sampling pass (see the module docstring). Not thread-shared; lives on the pass."""

    settings: Any  # the pass's SlothSettings (this module sits below the settings layer)
    seed: int = 0
    total: int = 1  # steps of the pass, as the last recorded call saw them
    latent_hw: Optional[Tuple[int, int]] = None
    grids: Dict[LevelKey, Tuple[int, int]] = field(default_factory=dict)  # token grid of each level seen
    budget: Dict[LevelKey, Dict[int, float]] = field(default_factory=dict)  # step -> share of the keys
    tiles: Dict[Tuple[int, int], TileRecord] = field(default_factory=dict)  # (step, level) -> record
    tile_peak_time: Optional[float] = None  # the tiled plans' schedule peak (None: no schedule)
    overlays: Dict[str, List[OverlayRecord]] = field(default_factory=dict)  # guidance -> [first, middle, last]

    # ---- recording (called by the engine) ----------------------------------------------------
    def layer(self, call: LayerCall, plan: Optional[Plan], latent_hw: Optional[Tuple[int, int]] = None) -> None:
        """One planned self-attention call; `plan` None = the original forward ran."""
        key = (call.block, call.level)
        self.total = call.total
        if latent_hw is not None:
            self.latent_hw = tuple(latent_hw)
        self.grids.setdefault(key, (call.h, call.w))
        steps = self.budget.setdefault(key, {})
        if call.step in steps:  # every layer of a level shares its plan; cond/uncond calls too
            return
        steps[call.step] = kv_share(plan, call)
        layout = plan.tiles() if plan is not None else None
        if layout is not None:
            self.tile_peak_time = layout.peak_time
            if call.step in self.tile_steps(call.total):
                self.tiles.setdefault((call.step, call.level), TileRecord(call.step, call.level, layout))

    def overlay(self, name: str, step: int, total: int, overlay: Overlay) -> None:
        """One guided step of guidance `name`; keeps its first, middle and last guided step."""
        self.total = total
        self.latent_hw = tuple(overlay.mask.shape)
        record = OverlayRecord(step, overlay)
        kept = self.overlays.setdefault(name, [])
        if not kept:
            kept.extend([record, record, record])
            return
        target = (total - 1) / 2
        if abs(step - target) < abs(kept[1].step - target):
            kept[1] = record
        kept[2] = record

    # ---- reading (called by the drawing code) --------------------------------------------------
    @property
    def empty(self) -> bool:
        return not self.budget and not self.overlays

    def overlay_names(self) -> List[str]:
        return list(self.overlays)

    def overlay_records(self, name: str) -> List[OverlayRecord]:
        """First, middle and last guided step of guidance `name`, each once, in step order."""
        out: Dict[int, OverlayRecord] = {}
        for r in self.overlays.get(name, ()):
            out.setdefault(r.step, r)
        return [out[s] for s in sorted(out)]

    def tile_steps(self, total: int) -> Tuple[int, ...]:
        """The steps whose tiles are kept: the peak of the tiled plans' schedule and the step farthest
        from it; a tiling without a schedule (only its seams move): its first and last step.
        """
        last = max(total - 1, 0)
        if self.tile_peak_time is not None:
            peak = min(last, max(0, round_half_up(self.tile_peak_time * last)))
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
        return sum(r.nbytes for records in self.overlays.values() for r in {id(r): r for r in records}.values())


def kv_share(plan: Optional[Plan], call: LayerCall) -> float:
    """Keys each query attends to, averaged over the queries, as a share of the layer's h*w keys
    (1.0 when the original forward runs)."""
    n = call.h * call.w
    if plan is None or n == 0:
        return 1.0
    return plan.keys_per_query(call.h, call.w) / n
