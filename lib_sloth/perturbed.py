"""What PAG and SEG share: an extra UNet pass on the cond rows in which chosen self-attention layers
are perturbed, and the guidance `cfg + scale * (cond - perturbed)` (x0 space).

- `PerturbedSettings`: the settings block both methods start from (scale, which layers, the step
  window); `pag.PagSettings` and `seg.SegSettings` derive from it.
- `attention_depths` / `LayerChoice`: which attn1 layers of a UNet a block of settings perturbs,
  counted in levels from the deepest one so a value means the same on SD1.x, SD2.x and SDXL.
- `rows_routed` / `PerturbedPlan`: one layer call that runs each guidance's perturbed attention on
  its own rows and the layer's normal computation on the others (the batched perturbed pass).
- `perturbed_guidance`: the guidance term; `PerturbedGuidance`: the per-pass guidance object
  (lib_sloth.guidance) PAG and SEG subclass with their `perturbed_attention`.

Facts behind the defaults: docs/guidance-notes.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention import attend
from .fields import Validated, setting
from .guidance import Guidance, GuidedStep, StepWindow, window_end, window_start
from .layer_call import Plan
from .layers import block_of
from .maps import Overlay
from .prediction import in_x0


@dataclass(frozen=True)
class PerturbedSettings(StepWindow, Validated):
    """Settings every perturbed-attention guidance has. Subclasses restate `enabled` with their hint."""

    enabled: bool = setting(False, hint="One more UNet pass on the cond rows per guided step")
    scale: float = setting(3.0, 0.0, 30.0, hint="Guidance strength: cfg + scale x (cond - perturbed); 0 = off")
    input_levels: int = setting(0, 0, 3, integer=True,
                                hint="Also perturb this many of the deepest input-block levels (0 = none)")
    middle: bool = setting(True, hint="Perturb every self-attention of the middle block (ComfyUI's default)")
    output_levels: int = setting(0, 0, 3, integer=True,
                                 hint="Also perturb this many of the deepest output-block levels (0 = none)")
    start: float = window_start()
    end: float = window_end()

    @property
    def active(self) -> bool:
        """Whether the guidance can change anything: on, a scale, some layer and a non-empty window."""
        return (self.enabled and self.scale != 0 and self.start <= self.end
                and (self.middle or self.input_levels > 0 or self.output_levels > 0))


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
# Plans
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PerturbedPlan(Plan):
    """One self-attention call in which some rows are perturbed.

    parts: (rows, guidance) pairs, disjoint rows; each guidance's `perturbed_attention` runs on its
    rows. The other rows run `normal` (the planners' plan for them: Slothful, Near-sighted, AgentSD)
    or, without one, full attention. grid: the layer's (h, w) token grid, None when unknown.
    """

    parts: Tuple[Tuple[Tuple[int, ...], "PerturbedGuidance"], ...]
    normal: Optional[Plan]
    grid: Optional[Tuple[int, int]]

    def run(self, layer, x, k_in, v_in, upcast):
        grid, normal_plan = self.grid, self.normal

        def perturbed_by(g):
            def perturbed(idx):
                return layer.to_out(g.perturbed_attention(layer, x[idx], k_in[idx], v_in[idx], grid, upcast))
            return perturbed

        def normal(idx):
            if normal_plan is not None:
                return normal_plan.run(layer, x[idx], k_in[idx], v_in[idx], upcast)
            q = layer.to_q(x[idx])
            return layer.to_out(attend(q, layer.to_k(k_in[idx]), layer.to_v(v_in[idx]), layer.heads, upcast))

        return rows_routed(x.shape[0], [(rows, perturbed_by(g)) for rows, g in self.parts], normal)

    def keys_per_query(self, h: int, w: int) -> float:
        """What the images' own rows attend to (the perturbed rows are the guidance's business)."""
        return self.normal.keys_per_query(h, w) if self.normal is not None else float(h * w)


# ---------------------------------------------------------------------------------------------
# Per-pass state
# ---------------------------------------------------------------------------------------------
class PerturbedGuidance(Guidance):
    """One perturbed-attention guidance (PAG, SEG) for one sampling pass (lib_sloth.guidance).

    Its extra UNet call runs the cond rows with the chosen layers (`LayerChoice`) perturbed:
    `perturb_plan` during its own extra call (`extra_call`), or, batched (`batches`), the rows the
    front end appended to the normal call inside `perturbing(rows)`, through `record_plan`. Layers it
    does not choose run as usual, under the other methods' plans. `guide` adds
    scale * (cond - perturbed) in x0 at the guided steps of its window, with the batched prediction
    from GuidedStep.batched or one extra call. Subclasses give `perturbed_attention`.
    """

    name = "perturbed attention"  # in notes; subclasses: "PAG", "SEG"
    method = ""  # its method-table name (the maps key its overlays by it); subclasses: "pag", "seg"
    extra_rows = "cond"
    batches = True
    needs_grid = False  # SEG blurs over the token grid: calls whose grid is unknown stay unperturbed

    def __init__(self, settings: PerturbedSettings, host=None):
        super().__init__(settings, host)
        self.batched_calls = 0  # normal UNet calls that carried its perturbed rows, for info and tests
        self._rows = None  # the rows of the normal call(s) it perturbs now; None = none
        self._choice: Optional[LayerChoice] = None
        self._choice_of = None  # the UNet the choice was made for (the refiner switch retargets the host)

    def guides_now(self) -> bool:
        """Active and inside the step window at the host's step (no host: whenever active)."""
        if self.host is None:
            return self.active
        return self.settings.guides(self.host.step, self.host.total)

    def batched_now(self) -> bool:
        return self.guides_now()

    def disarm(self) -> None:
        self._rows = None

    def stand_down_for(self, twin) -> str:
        """A WebUI's built-in twin perturbs the middle block in its own extra call: leave it the middle
        block (the other chosen levels, if any, stay guided by this one)."""
        short = self.name
        if not self.settings.middle:
            return f"{twin.name} is enabled too: it perturbs the middle block, Sloth's {short} other levels"
        self.settings = dataclasses.replace(self.settings, middle=False)
        self._choice = None
        if self.settings.active:
            return (f"{twin.name} is enabled too: Sloth's {short} leaves the middle block to it and perturbs "
                    "only its other levels")
        return f"{twin.name} is enabled too: it perturbs the middle block, so Sloth's {short} is off for this pass"

    # ---- which layers, which rows ---------------------------------------------------------------
    def layers(self) -> LayerChoice:
        unet = getattr(self.host, "unet", None)
        if self._choice is None or self._choice_of is not unet:
            self._choice, self._choice_of = LayerChoice(unet, self.settings), unet
        return self._choice

    def perturbing(self, rows):
        """Context: the chosen layers perturb `rows` (slice or indices, per model call) of the normal
        call(s) run inside it."""
        return _Perturbing(self, rows)

    def perturb_plan(self, module, info, x: torch.Tensor, call) -> Optional[Plan]:
        """During its own extra call: every row of a chosen layer perturbed (the planners plan the rest)."""
        rows = self._rows_here(module, info, x.shape[0], _grid_of(call), slice(None))
        return PerturbedPlan(((tuple(rows), self),), None, _grid_of(call)) if rows else None

    def record_plan(self, module, info, x: torch.Tensor, call) -> Optional[Plan]:
        """During the normal call: the perturbed rows of a chosen layer, of this guidance and of every
        other perturbed-attention guidance batched into the same call (one plan runs a layer call);
        the other rows run the planners' plan."""
        batch, grid = x.shape[0], _grid_of(call)
        parts = []
        for g in self._peers():
            rows = g._rows_here(module, info, batch, grid, g._rows)
            if rows:
                parts.append((tuple(rows), g))
        if not parts or parts[0][1] is not self:
            return None
        claimed = {r for rows, _ in parts for r in rows}
        others = [i for i in range(batch) if i not in claimed]
        normal = None
        if others and grid is not None:
            normal = self.host.planned(dataclasses.replace(call, batch=len(others), block_input=(
                call.block_input[others] if call.block_input is not None else None)))
        return PerturbedPlan(tuple(parts), normal, grid)

    def _peers(self) -> List["PerturbedGuidance"]:
        """The host's perturbed-attention guidances, in its order (self among them)."""
        if self.host is None:
            return [self]
        return [g for g in self.host.guidances if isinstance(g, PerturbedGuidance)]

    def _rows_here(self, module, info, batch: int, grid, rows) -> List[int]:
        """Which of a call's `batch` rows this guidance perturbs in this layer ([] = none)."""
        if rows is None or module not in self.layers():
            return []
        found = _resolve(rows, batch)
        if found and grid is None and self.needs_grid:
            self.note(f"{self.name}: {info.name} has no known token grid this call (merged by another "
                      "extension?); it ran unperturbed")
            return []
        return found

    def perturbed_attention(self, layer, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                            grid: Optional[Tuple[int, int]], upcast: bool) -> torch.Tensor:
        """The perturbed layer's attention output before to_out [B, N, heads*d]. Subclasses."""
        raise NotImplementedError

    # ---- guidance -------------------------------------------------------------------------------
    def guide(self, cfg: torch.Tensor, step: GuidedStep) -> torch.Tensor:
        """cfg + scale * (cond - perturbed) in x0 (eps / v converted through step.space) at a guided
        step; cfg itself, with no extra call, outside the window or without a cond prediction."""
        if not self.guides_now():
            return cfg
        if step.cond is None:
            self.note(f"{self.name}: a step had no cond prediction at hand; it ran without {self.name}")
            return cfg
        perturbed = step.batched.get(self)
        if perturbed is None:
            perturbed = self.extra_call(step, step.x)
        return self.guide_with(cfg, step.x, step.cond, perturbed, space=step.space, prediction=step.prediction)

    def guide_with(self, cfg: torch.Tensor, x: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, *,
                   space=None, prediction: str = "x0") -> torch.Tensor:
        """The guidance term for given predictions (all [B, C, H, W] of kind `prediction` for input x)."""
        scale = self.settings.scale
        recorder = getattr(self.host, "recorder", None)

        def guide_x0(cfg_x0, cond_x0, perturbed_x0):
            guided = perturbed_guidance(cfg_x0, cond_x0, perturbed_x0, scale)
            if recorder is not None:  # "Show Sloth maps": where this step's guidance moved the prediction
                recorder.overlay(self.method, self.host.step, self.host.total,
                                 moved_overlay(guided - cfg_x0, self.settings))
            return guided

        return in_x0(prediction, x, space, guide_x0, cfg, cond, perturbed)


def moved_overlay(moved_x0: torch.Tensor, settings: PerturbedSettings) -> Overlay:
    """What "Show Sloth maps" draws of one guided step: |guided - cfg| of the first image in x0, averaged
    over the latent channels (heat, its range printed on the panel), and the cells above its mean."""
    with torch.no_grad():
        moved = moved_x0[0].detach().float().abs().mean(dim=0).cpu()
    layers = ", ".join(n for n, on in (("input x" + str(settings.input_levels), settings.input_levels > 0),
                                        ("middle", settings.middle),
                                        ("output x" + str(settings.output_levels), settings.output_levels > 0)) if on)
    return Overlay(moved, moved > moved.mean(), f"scale {settings.scale:g}, layers: {layers}",
                   "where the guidance moved the prediction, |guided - cfg| in x0 (heat), cells above its mean (cyan)",
                   "above the mean")


def _grid_of(call) -> Optional[Tuple[int, int]]:
    return (call.grid.h, call.grid.w) if call.grid is not None else None


class _Perturbing:
    def __init__(self, guidance: PerturbedGuidance, rows):
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
