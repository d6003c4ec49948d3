"""Near-sighted Tile and Near-sighted Attention: each tile's queries attend to the tile's own
tokens (pooled, for Near-sighted Attention) plus a strided global sample of the whole image."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from . import schedule
from .attention import attend, kv_inputs
from .fields import Validated, nested, setting
from .geometry import window_2d
from .layer_call import LayerCall, Runner
from .slothful import PoolBlock, layer_stride, output_pool_block, pool_block_for, pooling_for, reduce_tokens, \
    run_slothful
from .tiling import TileGrid, offset_rng, tile, tile_grid, untile, with_offsets


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

    global_stride None = purely local. pool_block None (or pool_stride <= 1) = local K/V are the
    tile's own tokens (Near-sighted Tile); otherwise Slothful pooling inside each tile.
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
    if global_stride is not None:
        gy, gx = window_2d(global_stride, h, w)  # strided pick over the unpadded image
        if pooled_local:
            global_k = module.to_k(k_in_grid[:, ::gy, ::gx].reshape(b, -1, k_in_grid.shape[-1]))
            global_v = module.to_v(v_in_grid[:, ::gy, ::gx].reshape(b, -1, v_in_grid.shape[-1]))
        else:  # projection commutes with picking: reuse the projected grid
            global_k = k_grid[:, ::gy, ::gx].reshape(b, -1, k_grid.shape[-1])
            global_v = v_grid[:, ::gy, ::gx].reshape(b, -1, v_grid.shape[-1])

    out = q_grid.new_empty(b, h, w, q_grid.shape[-1])
    for rect in grid.rects():
        q = tile(q_grid, rect)
        if pooled_local:
            pooling = pooling_for(pool_block, pool_stride, rect.bh, rect.bw)
            k_local = tile(k_in_grid, rect)
            v_local = k_local if v_in_grid is k_in_grid else tile(v_in_grid, rect)
            if pooling is None:
                k, v = module.to_k(k_local), module.to_v(v_local)
            else:
                if shared_kv:
                    k_src, v_src = reduce_tokens(k_local, rect.bh, rect.bw, pooling)
                else:
                    k_src = reduce_tokens(k_local, rect.bh, rect.bw, pooling)[0]
                    v_src = reduce_tokens(v_local, rect.bh, rect.bw, pooling)[1]
                k = module.to_k(k_src)
                v = module.to_v(v_src)
        else:
            k, v = tile(k_grid, rect), tile(v_grid, rect)
        if global_k is not None:
            k = torch.cat([k, _per_tile(global_k, rect.tiles)], dim=1)
            v = torch.cat([v, _per_tile(global_v, rect.tiles)], dim=1)
        untile(attend(q, k, v, module.heads, upcast), rect, out)
    return out.view(b, n, -1)


def _per_tile(tokens: torch.Tensor, tiles: int) -> torch.Tensor:
    """[B, M, C] -> [B*tiles, M, C], matching tile()'s batch-major order."""
    b, m, c = tokens.shape
    return tokens.unsqueeze(1).expand(b, tiles, m, c).reshape(b * tiles, m, c)


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
