"""Near-sighted Tile and Near-sighted Attention: each tile's queries attend to the tile's own
tokens (pooled, for Near-sighted Attention) plus a global sample of the whole image.

The global sample of Near-sighted Tile is a strided 2D pick. Near-sighted Attention's is the
layer's own Slothful reduction at the global stride, as in the original node: its mode (1D picks
every n-th token in row order, 2D a strided 2D pick) and, with k/v blends > 0, the lerp of that
pick with the pooled window of the local reduction's size anchored at each picked token.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F

from . import schedule
from .attention import attend, kv_inputs
from .fields import Validated, nested, setting
from .geometry import window_1d, window_2d
from .layer_call import LayerCall, Runner
from .slothful import PoolBlock, layer_stride, output_pool_block, pool_block_for, pooling_for, reduce_tokens, \
    run_slothful
from .tiling import TileGrid, fill_per_tile, offset_rng, pick_in_tiles, tile, tile_grid, tile_with_room, untile, \
    with_offsets


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


def tiled_attention(module, x: torch.Tensor, grid: TileGrid, global_stride: Optional[float],
                    pool_block: Optional[PoolBlock], pool_stride: float, upcast: bool) -> torch.Tensor:
    """Near-sighted attention of x: [B, h*w, C] -> [B, h*w, heads*d], before to_out.

    global_stride None = purely local. pool_block None = Near-sighted Tile: local K/V are the tile's
    own tokens, the global sample a strided 2D pick. Otherwise Near-sighted Attention: Slothful
    pooling inside each tile (none while pool_stride <= 1) and global_sources() for the global K/V.
    """
    b, n, c = x.shape
    h, w = grid.h, grid.w
    k_in, v_in = kv_inputs(module, x)  # x itself unless a K/V source (A1111 hypernetwork) is set
    shared_kv = k_in is x and v_in is x
    k_in_grid = k_in.view(b, h, w, -1)
    v_in_grid = k_in_grid if v_in is k_in else v_in.view(b, h, w, -1)
    q_grid = module.to_q(x).view(b, h, w, -1)
    pooled_local = pool_block is not None and pool_stride > 1
    if not pooled_local:
        k_grid = module.to_k(k_in).view(b, h, w, -1)
        v_grid = module.to_v(v_in).view(b, h, w, -1)

    global_k = global_v = None
    if global_stride is not None and pool_block is None:  # Near-sighted Tile: strided 2D pick
        gy, gx = window_2d(global_stride, h, w)  # projection commutes with picking: reuse the grid
        global_k = k_grid[:, ::gy, ::gx].reshape(b, -1, k_grid.shape[-1])
        global_v = v_grid[:, ::gy, ::gx].reshape(b, -1, v_grid.shape[-1])
    elif global_stride is not None:
        if shared_kv:
            k_src, v_src = global_sources(x, h, w, global_stride, pool_block, pool_stride)
        else:  # keys from the K source, values from the V source (A1111 hypernetwork)
            k_src = global_sources(k_in, h, w, global_stride, pool_block, pool_stride)[0]
            v_src = global_sources(v_in, h, w, global_stride, pool_block, pool_stride)[1]
        global_k = module.to_k(k_src)
        global_v = module.to_v(v_src)

    out = q_grid.new_empty(b, h, w, q_grid.shape[-1])
    g = 0 if global_k is None else global_k.shape[1]
    for rect in grid.rects():
        q = tile(q_grid, rect)
        # K/V of each tile are built in one buffer: the local tokens, then the global sample
        # (copied once per tile by broadcast; no concatenation copy)
        if pooled_local:
            pooling = pooling_for(pool_block, pool_stride, rect.bh, rect.bw)
            if pooling is None:
                k_local = tile(k_in_grid, rect)
                v_local = k_local if v_in_grid is k_in_grid else tile(v_in_grid, rect)
                k, v = module.to_k(k_local), module.to_v(v_local)
            elif pooling.picks_only and pooling.mode.startswith("2D"):
                # the strided pick of each tile, straight from the grid: only picked tokens are copied
                k_src = pick_in_tiles(k_in_grid, rect, pooling.window)
                v_src = k_src if v_in_grid is k_in_grid else pick_in_tiles(v_in_grid, rect, pooling.window)
                k, v = module.to_k(k_src), module.to_v(v_src)
            else:
                k_local = tile(k_in_grid, rect)
                v_local = k_local if v_in_grid is k_in_grid else tile(v_in_grid, rect)
                if shared_kv:
                    k_src, v_src = reduce_tokens(k_local, rect.bh, rect.bw, pooling)
                else:
                    k_src = reduce_tokens(k_local, rect.bh, rect.bw, pooling)[0]
                    v_src = reduce_tokens(v_local, rect.bh, rect.bw, pooling)[1]
                k = module.to_k(k_src)
                v = module.to_v(v_src)
            if g:
                k, v = _with_global(k, global_k), _with_global(v, global_v)
        else:
            k, v = tile_with_room(k_grid, rect, g), tile_with_room(v_grid, rect, g)
            if g:
                fill_per_tile(k, global_k, rect.bh * rect.bw)
                fill_per_tile(v, global_v, rect.bh * rect.bw)
        untile(attend(q, k, v, module.heads, upcast), rect, out)
    return out.view(b, n, -1)


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

    def blend(weight: float) -> torch.Tensor:
        src = pick if weight == 0 else (pooled if weight == 1 else torch.lerp(pick, pooled, weight))
        return src.reshape(b, -1, c)

    k_src = blend(block.k_blend)
    v_src = k_src if block.v_blend == block.k_blend else blend(block.v_blend)
    return k_src, v_src


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


# ---- planning ---------------------------------------------------------------------------------
def plan_tile(s: TileSettings, call: LayerCall) -> Optional[Runner]:
    if not s.enabled or call.level >= s.max_depth:
        return None
    grid = tile_grid(call.h, call.w, s.tile_size)
    if grid.tiles == 1:
        return None
    grid = with_offsets(grid, offset_rng(call.seed, call.step, call.level))
    global_stride = grid.tiles / s.global_ratio if s.global_ratio > 0 else None
    return partial(tiled_attention, grid=grid, global_stride=global_stride, pool_block=None,
                   pool_stride=1.0, upcast=call.upcast)


def nearsighted_shape(s: NearSightedSettings, progress: float):
    """(tile_size, global_ratio) at this point of the schedule: base -> peak by time_ratio."""
    tr = schedule.time_ratio(progress, s.peak_time, s.time_decay)
    tile_size = schedule.round_half_up(schedule.lerp(s.base_tile_size, s.peak_tile_size, tr))
    return tile_size, schedule.lerp(s.base_global_ratio, s.peak_global_ratio, tr)


def plan_nearsighted(s: NearSightedSettings, call: LayerCall) -> Optional[Runner]:
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
            return partial(tiled_attention, grid=grid, global_stride=global_stride, pool_block=block,
                           pool_stride=stride, upcast=call.upcast)
    # deeper levels, and levels that fit in one tile, get plain Slothful
    pooling = pooling_for(block, stride, call.h, call.w) if block else None
    if pooling is None:
        return None
    return partial(run_slothful, h=call.h, w=call.w, pooling=pooling, upcast=call.upcast)


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
