"""Near-sighted Tile and Near-sighted Attention: each tile's queries attend to the tile's own
tokens (pooled, for Near-sighted Attention) plus a global sample of the whole image.

The global sample of Near-sighted Tile is a strided 2D pick. Near-sighted Attention's is the
layer's own Slothful reduction at the global stride, as in the original node: its mode (1D picks
every n-th token in row order, 2D a strided 2D pick) and, with k/v blends > 0, the lerp of that
pick with the pooled window of the local reduction's size anchored at each picked token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import schedule
from .attention import attend
from .fields import Validated, nested, setting
from .geometry import window_1d, window_2d
from .layer_call import LayerCall, Plan
from .slothful import PoolBlock, SlothfulPlan, blended_sources, kv_sources, layer_stride, output_pool_block, \
    pool_block_for, pooling_for, reduce_tokens
from .tiling import Rect, TileGrid, TileLayout, fill_per_tile, offset_rng, pick_in_tiles, tile, tile_grid, \
    tile_with_room, untile, with_offsets


@dataclass(frozen=True)
class TileSettings(Validated):
    """Near-sighted Tile."""

    enabled: bool = setting(False, hint="Local tiles of attention plus a global view of the whole image")
    tile_size: int = setting(32, 16, 64, integer=True,
                             hint="Tile side in latent cells (64 = 512 px on SD1.5); smaller = finer detail, less coherence")
    global_ratio: float = setting(0.5, 0.0, 1.0,
                                  hint="Share of the whole image each tile also sees; higher = more coherent, 0 = purely local")
    max_depth: int = setting(2, 1, 3, integer=True,
                             hint="How many of the shallowest attention levels are tiled")

    @property
    def active(self) -> bool:
        return self.enabled


@dataclass(frozen=True)
class NearSightedSettings(Validated):
    """Near-sighted Attention."""

    enabled: bool = setting(False, hint="Tiles plus Slothful pooling inside each tile: the fastest rewrite")
    max_depth: int = setting(2, 1, 3, integer=True,
                             hint="How many of the shallowest attention levels are tiled; deeper ones get plain Slothful")
    peak_time: float = setting(0.4, 0.0, 1.0, hint="Point of the schedule where pooling is strongest and tiles reach their peak")
    time_decay: float = setting(2.0, 0.0, 4.0, hint="How fast the effect moves back to base away from the peak")
    keep_middle: bool = setting(True, hint="No pooling in the middle block")
    base_tile_size: int = setting(24, 16, 64, integer=True, hint="Tile side far from the peak, in latent cells")
    peak_tile_size: int = setting(32, 16, 64, integer=True, hint="Tile side at the peak, in latent cells")
    base_global_ratio: float = setting(0.2, 0.0, 1.0, hint="Global view far from the peak")
    peak_global_ratio: float = setting(0.8, 0.0, 1.0, hint="Global view at the peak; higher keeps the image coherent")
    input: PoolBlock = nested(PoolBlock, "Input (down) blocks")
    output: PoolBlock = nested(output_pool_block, "Output (up) blocks")

    @property
    def active(self) -> bool:
        return self.enabled


def tile_attention(module, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, grid: TileGrid,
                   global_stride: Optional[float], upcast: bool) -> torch.Tensor:
    """Near-sighted Tile: x [B, h*w, C] -> [B, h*w, heads*d], before to_out.

    Each tile's queries attend to the tile's own tokens plus, unless global_stride is None, a
    strided 2D pick of the whole image (window_2d(global_stride)).
    """
    b, n, _ = x.shape
    q_grid = module.to_q(x).view(b, grid.h, grid.w, -1)
    k_grid, v_grid = _projected_grids(module, k_in, v_in, b, grid.h, grid.w)
    global_k = global_v = None
    if global_stride is not None:  # projection commutes with picking: pick from the projected grids
        gy, gx = window_2d(global_stride, grid.h, grid.w)
        global_k = k_grid[:, ::gy, ::gx].reshape(b, -1, k_grid.shape[-1])
        global_v = v_grid[:, ::gy, ::gx].reshape(b, -1, v_grid.shape[-1])
    return _attend_tiles(module, q_grid, grid, upcast,
                         lambda rect: _tile_kv(k_grid, v_grid, rect, global_k, global_v)).view(b, n, -1)


def nearsighted_attention(module, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, grid: TileGrid,
                          global_stride: Optional[float], pool_block: PoolBlock, pool_stride: float,
                          upcast: bool) -> torch.Tensor:
    """Near-sighted Attention: x [B, h*w, C] -> [B, h*w, heads*d], before to_out.

    Slothful pooling inside each tile (none while pool_stride <= 1) and, unless global_stride is
    None, global_sources() of the whole image as the global K/V.
    """
    b, n, _ = x.shape
    h, w = grid.h, grid.w
    q_grid = module.to_q(x).view(b, h, w, -1)
    global_k = global_v = None
    if global_stride is not None:
        k_src, v_src = kv_sources(x, k_in, v_in,
                                  lambda t: global_sources(t, h, w, global_stride, pool_block, pool_stride))
        global_k, global_v = module.to_k(k_src), module.to_v(v_src)
    if pool_stride <= 1:
        k_grid, v_grid = _projected_grids(module, k_in, v_in, b, h, w)
        kv = lambda rect: _tile_kv(k_grid, v_grid, rect, global_k, global_v)  # noqa: E731
    else:
        k_in_grid = k_in.view(b, h, w, -1)
        v_in_grid = k_in_grid if v_in is k_in else v_in.view(b, h, w, -1)
        kv = lambda rect: _pooled_tile_kv(module, k_in_grid, v_in_grid, rect,  # noqa: E731
                                          pooling_for(pool_block, pool_stride, rect.bh, rect.bw), global_k, global_v)
    return _attend_tiles(module, q_grid, grid, upcast, kv).view(b, n, -1)


def _projected_grids(module, k_in: torch.Tensor, v_in: torch.Tensor, b: int, h: int, w: int):
    """K and V of every token, as [B, h, w, C] grids."""
    return module.to_k(k_in).view(b, h, w, -1), module.to_v(v_in).view(b, h, w, -1)


def _attend_tiles(module, q_grid: torch.Tensor, grid: TileGrid, upcast: bool, kv_for) -> torch.Tensor:
    """Attention of each tile's queries over kv_for(rect) -> (k, v), written back into one
    [B, h, w, heads*d] output."""
    out = q_grid.new_empty(q_grid.shape)
    for rect in grid.rects():
        k, v = kv_for(rect)
        untile(attend(tile(q_grid, rect), k, v, module.heads, upcast), rect, out)
    return out


def _tile_kv(k_grid: torch.Tensor, v_grid: torch.Tensor, rect: Rect, global_k: Optional[torch.Tensor],
             global_v: Optional[torch.Tensor]):
    """Each tile's own K/V followed by the global sample, built in one buffer (the global tokens
    copied once per tile by broadcast; no concatenation copy)."""
    g = 0 if global_k is None else global_k.shape[1]
    k, v = tile_with_room(k_grid, rect, g), tile_with_room(v_grid, rect, g)
    if g:
        fill_per_tile(k, global_k, rect.bh * rect.bw)
        fill_per_tile(v, global_v, rect.bh * rect.bw)
    return k, v


def _pooled_tile_kv(module, k_in_grid: torch.Tensor, v_in_grid: torch.Tensor, rect: Rect, pooling,
                    global_k: Optional[torch.Tensor], global_v: Optional[torch.Tensor]):
    """Each tile's K/V from its Slothful reduction (`pooling`; None = every token), then the global sample."""
    if pooling is not None and pooling.picks_only and pooling.mode.startswith("2D"):
        # the strided pick of each tile, straight from the grid: only picked tokens are copied
        k_src = pick_in_tiles(k_in_grid, rect, pooling.window)
        v_src = k_src if v_in_grid is k_in_grid else pick_in_tiles(v_in_grid, rect, pooling.window)
    else:
        k_local = tile(k_in_grid, rect)
        v_local = k_local if v_in_grid is k_in_grid else tile(v_in_grid, rect)
        if pooling is None:
            k_src, v_src = k_local, v_local
        else:
            k_src, v_src = kv_sources(k_local, k_local, v_local,
                                      lambda t: reduce_tokens(t, rect.bh, rect.bw, pooling))
    k, v = module.to_k(k_src), module.to_v(v_src)
    if global_k is not None:
        k, v = _with_global(k, global_k), _with_global(v, global_v)
    return k, v


def global_sources(x: torch.Tensor, h: int, w: int, global_stride: float, block: PoolBlock,
                   local_stride: float) -> tuple:
    """Near-sighted Attention's global K/V sources from x: [B, h*w, C] over the unpadded image.

    The pick: 2D modes take every gy-th row and gx-th column, (gy, gx) = window_2d(global_stride);
    1D modes every g-th token of the row-major sequence, g = ceil(global_stride). With a blend > 0
    the source is lerp(pick, pooled, blend), where pooled is the layer's AVG/MAX over the local
    reduction's window (window_2d / window_1d of local_stride, (1, 1) when it is <= 1) anchored at
    each picked token; windows reaching past the right/bottom edge pool over their in-image cells,
    so there are as many pooled tokens as picked ones.
    """
    b, n, c = x.shape
    # the [B, rows, cols, C] view of x, as in slothful.reduce_tokens: the pick copies only the
    # picked tokens (this runs on every call; a channels-first copy of x would copy it whole)
    if block.mode.startswith("2D"):
        rows = x.reshape(b, h, w, c)
        step = window_2d(global_stride, h, w)
        size = window_2d(local_stride, h, w) if local_stride > 1 else (1, 1)
    else:
        rows = x.reshape(b, 1, n, c)
        step = (1, window_1d(global_stride, n))
        size = (1, window_1d(local_stride, n)) if local_stride > 1 else (1, 1)
    pick = rows[:, ::step[0], ::step[1]]
    need_pool = (block.k_blend > 0 or block.v_blend > 0) and size != (1, 1)  # a 1x1 window is the pick
    pooled = pick
    if need_pool:
        pooled = _pool_at(rows.permute(0, 3, 1, 2), size, step, block.mode.endswith("MAX")).permute(0, 2, 3, 1)
    return blended_sources(pick, pooled, block.k_blend, block.v_blend)


def _pool_at(grid: torch.Tensor, size: tuple, step: tuple, use_max: bool) -> torch.Tensor:
    """AVG/MAX of grid [B, C, H, W] over size-windows anchored every step cells, clipped to the grid:
    [B, C, ceil(H/sy), ceil(W/sx)]. Cells past the edge are -inf for MAX and left out of the mean."""
    _, _, hh, ww = grid.shape
    (ky, kx), (sy, sx) = size, step
    pad_y = max(0, (-(-hh // sy) - 1) * sy + ky - hh)
    pad_x = max(0, (-(-ww // sx) - 1) * sx + kx - ww)
    if use_max:
        padded = F.pad(grid, (0, pad_x, 0, pad_y), value=float("-inf"))
        return F.max_pool2d(padded, size, step)
    total = F.avg_pool2d(F.pad(grid, (0, pad_x, 0, pad_y)), size, step)
    inside = F.avg_pool2d(F.pad(torch.ones_like(grid[:1, :1]), (0, pad_x, 0, pad_y)), size, step)
    return total / inside


def _with_global(local: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[B*tiles, L, C] local K or V and [B, G, C] global ones -> [B*tiles, L + G, C]."""
    bt, m, c = local.shape
    buf = local.new_empty(bt, m + tokens.shape[1], c)
    buf[:, :m] = local
    fill_per_tile(buf, tokens, m)
    return buf


# ---- plans ------------------------------------------------------------------------------------
def _keys_per_query(grid: TileGrid, global_keys: int, local_keys) -> float:
    """Keys each query sees, averaged over the queries: its tile's local_keys(rect) plus the global sample."""
    pairs = sum(rect.tiles * rect.bh * rect.bw * (local_keys(rect) + global_keys) for rect in grid.rects())
    return pairs / float(grid.h * grid.w)


@dataclass(frozen=True)
class TilePlan(Plan):
    """Near-sighted Tile on one call: `grid` (seams placed) and the global pick's stride (None = none)."""

    grid: TileGrid
    global_stride: Optional[float]
    tile_size: int
    global_ratio: float

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(tile_attention(layer, x, k_in, v_in, self.grid, self.global_stride, upcast))

    def tiles(self) -> TileLayout:
        window = None if self.global_stride is None else window_2d(self.global_stride, self.grid.h, self.grid.w)
        return TileLayout(self.grid, window, None, self.tile_size, self.global_ratio, "Near-sighted Tile")

    def keys_per_query(self, h: int, w: int) -> float:
        return _keys_per_query(self.grid, self.tiles().global_keys(), lambda rect: rect.bh * rect.bw)


@dataclass(frozen=True)
class NearSightedPlan(Plan):
    """Near-sighted Attention on one tiled call: tiles, local pooling (`block` at `pool_stride`) and
    the global sample at `global_stride` (None = none)."""

    grid: TileGrid
    global_stride: Optional[float]
    block: PoolBlock
    pool_stride: float
    tile_size: int
    global_ratio: float
    peak_time: float

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(nearsighted_attention(layer, x, k_in, v_in, self.grid, self.global_stride, self.block,
                                                  self.pool_stride, upcast))

    def tiles(self) -> TileLayout:
        window = step_1d = None
        if self.global_stride is not None and self.block.mode.startswith("1D"):
            step_1d = window_1d(self.global_stride, self.grid.h * self.grid.w)
        elif self.global_stride is not None:
            window = window_2d(self.global_stride, self.grid.h, self.grid.w)
        return TileLayout(self.grid, window, step_1d, self.tile_size, self.global_ratio, "Near-sighted Attention",
                          self.peak_time)

    def keys_per_query(self, h: int, w: int) -> float:
        def local(rect) -> int:
            pooling = pooling_for(self.block, self.pool_stride, rect.bh, rect.bw) if self.pool_stride > 1 else None
            return rect.bh * rect.bw if pooling is None else pooling.tokens_left(rect.bh, rect.bw)

        return _keys_per_query(self.grid, self.tiles().global_keys(), local)


# ---- planning ---------------------------------------------------------------------------------
def plan_tile(s: TileSettings, call: LayerCall) -> Optional[TilePlan]:
    if not s.enabled or call.level >= s.max_depth:
        return None
    grid = tile_grid(call.h, call.w, s.tile_size)
    if grid.tiles == 1:
        return None
    grid = with_offsets(grid, offset_rng(call.seed, call.step, call.level))
    global_stride = grid.tiles / s.global_ratio if s.global_ratio > 0 else None
    return TilePlan(grid, global_stride, s.tile_size, s.global_ratio)


def nearsighted_shape(s: NearSightedSettings, progress: float):
    """(tile_size, global_ratio) at this point of the schedule: base -> peak by time_ratio."""
    tr = schedule.time_ratio(progress, s.peak_time, s.time_decay)
    tile_size = schedule.round_half_up(schedule.lerp(s.base_tile_size, s.peak_tile_size, tr))
    return tile_size, schedule.lerp(s.base_global_ratio, s.peak_global_ratio, tr)


def plan_nearsighted(s: NearSightedSettings, call: LayerCall) -> Optional[Plan]:
    if not s.enabled:
        return None
    block = pool_block_for(call.block, s.keep_middle, s.input, s.output)
    stride = layer_stride(block, call.level, call.progress, s.peak_time, s.time_decay) if block else 0.0
    if call.level < s.max_depth:
        tile_size, global_ratio = nearsighted_shape(s, call.progress)
        grid = tile_grid(call.h, call.w, tile_size)
        if grid.tiles > 1:
            grid = with_offsets(grid, offset_rng(call.seed, call.step, call.level))
            global_stride = max(1.0, stride) * grid.tiles / global_ratio if global_ratio > 0 else None
            return NearSightedPlan(grid, global_stride, block, stride, int(tile_size), float(global_ratio),
                                   s.peak_time)
    # deeper levels, and levels that fit in one tile, get plain Slothful
    pooling = pooling_for(block, stride, call.h, call.w) if block else None
    if pooling is None:
        return None
    return SlothfulPlan(call.h, call.w, pooling)


# ---- why a method on changed no layer (lib_sloth.idle) ------------------------------------------
def tile_idle_reason(s: TileSettings, calls) -> str:
    """Why Near-sighted Tile rewrote none of `calls` (LayerCalls of one pass)."""
    tiled = [c for c in calls if c.level < s.max_depth]
    if not tiled:
        return f"no self-attention level of this model is shallower than max_depth {s.max_depth}"
    h, w = max(((c.h, c.w) for c in tiled), key=lambda hw: hw[0] * hw[1])
    return (f"every tiled level fits in one tile (largest {h}x{w}, tile size {s.tile_size}); "
            "a smaller tile size or a larger image tiles it")


def nearsighted_idle_reason(s: NearSightedSettings, calls) -> str:
    """Why Near-sighted Attention rewrote none of `calls`: no level was tiled and no pooling ran."""
    tiled = [c for c in calls if c.level < s.max_depth]
    parts = []
    if tiled:
        h, w = max(((c.h, c.w) for c in tiled), key=lambda hw: hw[0] * hw[1])
        largest = max(nearsighted_shape(s, c.progress)[0] for c in tiled)
        parts.append(f"every tiled level fits in one tile (largest {h}x{w}, tile size up to {largest})")
    strengths = [layer_stride(b, c.level, c.progress, s.peak_time, s.time_decay)
                 for c in calls for b in [pool_block_for(c.block, s.keep_middle, s.input, s.output)] if b]
    if not strengths or max(strengths) <= 1:
        most = f" (at most {max(strengths):.3g})" if strengths else ""
        parts.append(f"the pooling strength after time and depth decay stayed at or below 1{most}")
    return " and ".join(parts) or "no layer of this image could be tiled or pooled"
