"""What PAG and SEG share: an extra UNet pass on the cond rows in which chosen self-attention layers
are perturbed, and the guidance `cfg + scale * (cond - perturbed)` (x0 space).

- `PerturbedSettings`: the settings block both methods start from (scale, which layers, the step
  window); `pag.PagSettings` and `seg.SegSettings` derive from it.
- `attention_depths` / `LayerChoice`: which attn1 layers of a UNet a block of settings perturbs,
  counted in levels from the deepest one so a value means the same on SD1.x, SD2.x and SDXL.
- `rows_routed`: a layer computation that runs the perturbed attention on some rows of a batch and
  something else (the layer's normal computation) on the others, for the batched perturbed pass.
- `perturbed_guidance`: the guidance term.

Facts behind the defaults: docs/guidance-notes.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .fields import Validated, setting
from .layers import block_of
from .schedule import in_window


@dataclass(frozen=True)
class PerturbedSettings(Validated):
    """Settings every perturbed-attention guidance has. Subclasses restate `enabled` with their hint."""

    enabled: bool = setting(False, hint="One more UNet pass on the cond rows per guided step")
    scale: float = setting(3.0, 0.0, 30.0, hint="Guidance strength: cfg + scale x (cond - perturbed); 0 = off")
    input_levels: int = setting(0, 0, 3, integer=True,
                                hint="Also perturb this many of the deepest input-block levels (0 = none)")
    middle: bool = setting(True, hint="Perturb every self-attention of the middle block (ComfyUI's default)")
    output_levels: int = setting(0, 0, 3, integer=True,
                                 hint="Also perturb this many of the deepest output-block levels (0 = none)")
    start: float = setting(0.0, 0.0, 1.0, hint="First guided step, as progress 0-1 (0 = the first step)")
    end: float = setting(1.0, 0.0, 1.0, hint="Last guided step, as progress 0-1 (1 = the last step); "
                                            "outside the window the step is plain CFG with no extra pass")

    @property
    def active(self) -> bool:
        """Whether the guidance can change anything: on, a scale, some layer and a non-empty window."""
        return (self.enabled and self.scale != 0 and self.start <= self.end
                and (self.middle or self.input_levels > 0 or self.output_levels > 0))

    def guides(self, step: int, total: int) -> bool:
        """Whether this step (0-based, of `total`) is guided: active and inside the window."""
        return self.active and in_window(step, total, self.start, self.end)


# ---------------------------------------------------------------------------------------------
# Which layers
# ---------------------------------------------------------------------------------------------
def attention_depths(unet: nn.Module) -> Dict[nn.Module, Tuple[str, int]]:
    """attn1 -> (block, depth) for every self-attention layer of a UNet.

    depth counts the Downsample modules above the layer (the Upsample modules below it, in the
    output blocks), walking the modules in order: SD1.x input blocks 1-2 / 4-5 / 7-8 are at depth
    0 / 1 / 2, its output blocks 3-5 at 2. Only class names are read (ldm, sgm, ComfyUI and Forge
    all name them Downsample / Upsample).
    """
    depth = 0
    found: Dict[nn.Module, Tuple[str, int]] = {}
    for name, module in unet.named_modules():
        block = block_of(name)
        kind = type(module).__name__
        if block == "input" and kind == "Downsample":
            depth += 1
        elif block == "output" and kind == "Upsample":
            depth -= 1
        attn1 = getattr(module, "attn1", None)
        if (block is not None and isinstance(attn1, nn.Module) and hasattr(attn1, "to_q")
                and not getattr(module, "disable_self_attn", False)):
            found[attn1] = (block, depth)
    return found


class LayerChoice:
    """The set of attn1 layers of one UNet that a PerturbedSettings perturbs (computed once)."""

    def __init__(self, unet: nn.Module, settings: PerturbedSettings):
        depths = attention_depths(unet)
        deepest = {b: max((d for bb, d in depths.values() if bb == b), default=0) for b in ("input", "output")}
        levels = {"input": settings.input_levels, "output": settings.output_levels}
        self.layers = frozenset(
            m for m, (block, depth) in depths.items()
            if (settings.middle if block == "middle" else depth > deepest[block] - levels[block]))

    def __contains__(self, module: nn.Module) -> bool:
        return module in self.layers

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


# ---------------------------------------------------------------------------------------------
# Row routing
# ---------------------------------------------------------------------------------------------
# A layer computation: (x [B, N, C]) -> the layer's output for those rows [B, N, C']
RowsFn = Callable[[torch.Tensor], torch.Tensor]


def rows_routed(x: torch.Tensor, rows: Sequence[int], perturbed: RowsFn, normal: RowsFn) -> torch.Tensor:
    """perturbed(x[rows]) on `rows`, normal(x[others]) on the others, in x's row order.

    With every row perturbed (the separate extra pass) `normal` is never called, and with none
    (`rows` empty) `perturbed` is not: each side runs on exactly its own rows.
    """
    batch = x.shape[0]
    rows = sorted(set(int(r) for r in rows))
    if len(rows) == batch:
        return perturbed(x)
    if not rows:
        return normal(x)
    others = [i for i in range(batch) if i not in set(rows)]
    out_p, out_n = perturbed(x[rows]), normal(x[others])
    out = out_p.new_empty((batch,) + tuple(out_p.shape[1:]))
    out[rows] = out_p
    out[others] = out_n.to(out.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------------------------
def perturbed_guidance(cfg: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, scale: float) -> torch.Tensor:
    """cfg + scale * (cond - perturbed), all [B, C, H, W] of one prediction kind (x0 here).

    cond: the cond rows' prediction, one per image (what CFG combined); perturbed: the same rows
    with the chosen layers perturbed. scale 0 returns cfg itself.
    """
    if scale == 0:
        return cfg
    return cfg + scale * (cond - perturbed)
