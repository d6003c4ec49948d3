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

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention import attend, kv_inputs
from .fields import Validated, setting
from .layers import block_of
from .prediction import in_x0
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
# A layer computation for some rows: (row indices) -> the layer's output for those rows [len, N, C']
RowsFn = Callable[[List[int]], torch.Tensor]


def rows_routed(batch: int, parts: Sequence[Tuple[Sequence[int], RowsFn]], normal: RowsFn) -> torch.Tensor:
    """Each part's fn(rows) on its own rows, normal(others) on the rows no part claims, in row order.

    parts: (rows, fn) pairs with disjoint rows. A side with no rows is never called: with every row
    perturbed (the separate extra pass) `normal` is not, with none only `normal` is.
    """
    parts = [(sorted(set(int(r) for r in rows)), fn) for rows, fn in parts]
    parts = [(rows, fn) for rows, fn in parts if rows]
    claimed = {r for rows, _ in parts for r in rows}
    others = [i for i in range(batch) if i not in claimed]
    if len(parts) == 1 and not others:
        return parts[0][1](parts[0][0])
    if not parts:
        return normal(others)
    pieces = [(rows, fn(rows)) for rows, fn in parts]
    if others:
        pieces.append((others, normal(others)))
    first = pieces[0][1]
    out = first.new_empty((batch,) + tuple(first.shape[1:]))
    for rows, value in pieces:
        out[rows] = value.to(out.dtype)
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


# ---------------------------------------------------------------------------------------------
# Per-pass state
# ---------------------------------------------------------------------------------------------
class PerturbedPass:
    """One perturbed-attention guidance (PAG, SEG) for one sampling pass.

    A front end, per guided step (`guides_now`):

        with guidance.perturbing(rows):          # the rows of the coming UNet call that are perturbed:
            out = model(x_in, sigma_in, cond_in)  #   appended cond rows (batched) or every row (separate)
        cfg = guidance.guide(cfg, x, cond, perturbed, space=..., prediction=...)

    or, where it cannot batch, `guide_separately(cfg, x, cond, call_model, ...)`, which makes the
    one extra model call itself (cond conditioning, every row perturbed). While rows are set, the
    chosen layers (`LayerChoice`) run `perturbed_attention` on exactly those rows and their normal
    computation (the planners' plan under Slothful / Near-sighted / AgentSD, else full attention)
    on the others; every other layer runs as usual for every row. Subclasses give the name and
    `perturbed_attention`.
    """

    name = "perturbed"
    needs_grid = False  # SEG blurs over the token grid: calls whose grid is unknown stay unperturbed

    def __init__(self, settings: PerturbedSettings, patch=None):
        self.settings = settings
        self.patch = patch
        self.extra_calls = 0  # separate extra model calls made, for info and tests
        self.batched_calls = 0  # model calls that carried perturbed rows next to cond/uncond
        self.notes: List[str] = []
        self._rows = None
        self._choice: Optional[LayerChoice] = None
        self._choice_of = None  # the UNet the choice was made for (the refiner switch retargets the patch)
        if patch is not None and self.active:
            patch.interceptors.append(self.intercept)

    @property
    def active(self) -> bool:
        return self.settings.active

    def guides_now(self) -> bool:
        """Active and inside the step window at the patch's step (no patch: whenever active)."""
        if self.patch is None:
            return self.active
        return self.settings.guides(self.patch.step, self.patch.total)

    def note(self, message: str) -> None:
        target = self.patch.notes if self.patch is not None else self.notes
        if message not in target:
            target.append(message)

    def close(self) -> None:
        self._rows = None
        if self.patch is not None and self.intercept in self.patch.interceptors:
            self.patch.interceptors.remove(self.intercept)

    # ---- the perturbed rows -----------------------------------------------------------------
    def perturbing(self, rows):
        """Context: the chosen layers perturb `rows` (slice or indices, per model call) until it exits."""
        return _Perturbing(self, rows)

    def layers(self) -> LayerChoice:
        unet = getattr(self.patch, "unet", None)
        if self._choice is None or self._choice_of is not unet:
            self._choice, self._choice_of = LayerChoice(unet, self.settings), unet
        return self._choice

    def intercept(self, module, info, x: torch.Tensor, call):
        """SlothPatch interceptor: take over a chosen layer while rows are perturbed; None elsewhere.

        The first perturbed-attention guidance on the patch that takes a call also runs every other
        one's rows of that call (PAG and SEG batched into one call, each on its own rows): the patch
        hands a layer call to one interceptor only.
        """
        batch = x.shape[0]
        grid = (call.grid.h, call.grid.w) if call.grid is not None else None
        parts = []
        for g in self._peers():
            rows = g._rows_here(module, info, batch, grid)
            if rows:
                parts.append((rows, g))
        if not parts or parts[0][1] is not self:
            return None
        claimed = {r for rows, _ in parts for r in rows}
        others = [i for i in range(batch) if i not in claimed]
        planned = None
        if others and grid is not None:
            planned = self.patch.planned(dataclasses.replace(call, batch=len(others), block_input=(
                call.block_input[others] if call.block_input is not None else None)))
        upcast = call.upcast

        def run(view, x_call: torch.Tensor) -> torch.Tensor:
            k_in, v_in = kv_inputs(view, x_call)

            def perturbed_by(g):
                def perturbed(idx):
                    return view.to_out(g.perturbed_attention(view, x_call[idx], k_in[idx], v_in[idx], grid, upcast))
                return perturbed

            def normal(idx):
                if planned is not None:
                    out = planned(view, x_call[idx])
                    return out if getattr(planned, "projects_out", False) else view.to_out(out)
                xi = x_call[idx]
                return view.to_out(attend(view.to_q(xi), view.to_k(k_in[idx]), view.to_v(v_in[idx]), view.heads,
                                          upcast))

            return rows_routed(x_call.shape[0], [(rows, perturbed_by(g)) for rows, g in parts], normal)

        run.projects_out = True
        return run

    def _peers(self) -> List["PerturbedPass"]:
        """Every perturbed-attention guidance on this patch, in interceptor order (self among them)."""
        if self.patch is None:
            return [self]
        found = [getattr(i, "__self__", None) for i in self.patch.interceptors]
        return [g for g in found if isinstance(g, PerturbedPass)]

    def _rows_here(self, module, info, batch: int, grid) -> List[int]:
        """The rows this guidance perturbs in this layer call ([] = none)."""
        if self._rows is None or module not in self.layers():
            return []
        rows = _resolve(self._rows, batch)
        if rows and grid is None and self.needs_grid:
            self.note(f"{self.name}: {info.name} has no known token grid this call (merged by another "
                      "extension?); it ran unperturbed")
            return []
        return rows

    def perturbed_attention(self, layer, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                            grid: Optional[Tuple[int, int]], upcast: bool) -> torch.Tensor:
        """The perturbed layer's attention output before to_out [B, N, heads*d]. Subclasses."""
        raise NotImplementedError

    # ---- guidance ---------------------------------------------------------------------------
    def guide(self, cfg: torch.Tensor, x: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, *,
              space=None, prediction: str = "x0") -> torch.Tensor:
        """cfg + scale * (cond - perturbed), computed in x0 (eps / v converted through `space`), or cfg
        itself outside the window. All [B, C, H, W] predictions of kind `prediction` for input x."""
        if not self.guides_now():
            return cfg
        scale = self.settings.scale
        recorder = getattr(self.patch, "recorder", None)

        def guide_x0(cfg_x0, cond_x0, perturbed_x0):
            guided = perturbed_guidance(cfg_x0, cond_x0, perturbed_x0, scale)
            if recorder is not None:  # "Show Sloth maps": where this step's guidance moved the prediction
                recorder.guidance(self.name, self.patch.step, self.patch.total, guided - cfg_x0)
            return guided

        return in_x0(prediction, x, space, guide_x0, cfg, cond, perturbed)

    def guide_separately(self, cfg: torch.Tensor, x: torch.Tensor, cond: torch.Tensor,
                         call_model: Callable[[torch.Tensor], torch.Tensor], *, space=None,
                         prediction: str = "x0") -> torch.Tensor:
        """guide() with the perturbed prediction from one more model call: call_model(x) runs the cond
        conditioning on x's rows and returns `prediction`. Outside the window: cfg, no call."""
        if not self.guides_now():
            return cfg
        perturbed = self.run_perturbed(lambda: call_model(x))
        return self.guide(cfg, x, cond, perturbed, space=space, prediction=prediction)

    def run_perturbed(self, call: Callable[[], torch.Tensor]) -> torch.Tensor:
        """call() -- one more model call of the front end's -- with every row perturbed; counted."""
        with self.perturbing(slice(None)):
            self.extra_calls += 1
            return call()


class _Perturbing:
    def __init__(self, guidance: PerturbedPass, rows):
        self.guidance, self.rows = guidance, rows

    def __enter__(self):
        self.saved, self.guidance._rows = self.guidance._rows, self.rows
        return self.guidance

    def __exit__(self, *exc):
        self.guidance._rows = self.saved
        return False


def _resolve(rows, batch: int) -> List[int]:
    if isinstance(rows, slice):
        return list(range(batch))[rows]
    out = sorted({int(r) + batch if int(r) < 0 else int(r) for r in rows})
    if out and not 0 <= out[0] <= out[-1] < batch:
        raise IndexError(f"perturbed rows {out} outside a model call of {batch} rows")
    return out
