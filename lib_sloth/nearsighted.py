"""Near-sighted Tile and Near-sighted Attention: each tile's queries attend to the tile's own
tokens (pooled, for Near-sighted Attention) plus a strided global sample of the whole image."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .attention import attend
from .geometry import window_2d
from .settings import PoolBlock
from .slothful import pooling_for, reduce_tokens
from .tiling import TileGrid, tile, untile


def tiled_attention(module, x: torch.Tensor, grid: TileGrid, global_stride: Optional[float],
                    pool_block: Optional[PoolBlock], pool_stride: float, upcast: bool) -> torch.Tensor:
    """Near-sighted attention of x: [B, h*w, C] -> [B, h*w, heads*d], before to_out.

    global_stride None = purely local. pool_block None (or pool_stride <= 1) = local K/V are the
    tile's own tokens (Near-sighted Tile); otherwise Slothful pooling inside each tile.
    """
    b, n, c = x.shape
    h, w = grid.h, grid.w
    x_grid = x.view(b, h, w, c)
    q_grid = module.to_q(x).view(b, h, w, -1)
    pooled_local = pool_block is not None and pool_stride > 1
    if not pooled_local:
        k_grid = module.to_k(x).view(b, h, w, -1)
        v_grid = module.to_v(x).view(b, h, w, -1)

    global_k = global_v = None
    if global_stride is not None:
        gy, gx = window_2d(global_stride, h, w)  # strided pick over the unpadded image
        if pooled_local:
            picked = x_grid[:, ::gy, ::gx].reshape(b, -1, c)
            global_k, global_v = module.to_k(picked), module.to_v(picked)
        else:  # projection commutes with picking: reuse the projected grid
            global_k = k_grid[:, ::gy, ::gx].reshape(b, -1, k_grid.shape[-1])
            global_v = v_grid[:, ::gy, ::gx].reshape(b, -1, v_grid.shape[-1])

    out = q_grid.new_empty(b, h, w, q_grid.shape[-1])
    for rect in grid.rects():
        q = tile(q_grid, rect)
        if pooled_local:
            pooling = pooling_for(pool_block, pool_stride, rect.bh, rect.bw)
            local = tile(x_grid, rect)
            if pooling is None:
                k, v = module.to_k(local), module.to_v(local)
            else:
                k_src, v_src = reduce_tokens(local, rect.bh, rect.bw, pooling)
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
