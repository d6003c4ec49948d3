"""Tile geometry for Near-sighted Tile / Attention: tiles without padding cells.

A grid h x w is cut into ty x tx tiles of th x tw (th = ceil(h/ty)). The padding
ty*th - h is split between the top (offset oy) and the bottom; instead of materialising
padding cells we shrink the first and last tile rows by it, so padding can never become a
query, key or value. Tiles of equal shape form at most 3 x 3 rectangles, each handled as one
batch of equal tiles.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch


@dataclass(frozen=True)
class Rect:
    """ky x kx tiles of bh x bw cells whose top-left cell is (y0, x0)."""

    y0: int
    x0: int
    ky: int
    kx: int
    bh: int
    bw: int

    @property
    def tiles(self) -> int:
        return self.ky * self.kx


@dataclass(frozen=True)
class TileGrid:
    h: int
    w: int
    ty: int
    tx: int
    th: int
    tw: int
    oy: int = 0  # padding rows taken from the first tile row (0 .. pad_y)
    ox: int = 0

    @property
    def pad(self) -> Tuple[int, int]:
        return self.ty * self.th - self.h, self.tx * self.tw - self.w

    @property
    def tiles(self) -> int:
        return self.ty * self.tx

    def rects(self) -> List[Rect]:
        rows = _runs(_band_sizes(self.ty, self.th, self.pad[0], self.oy))
        cols = _runs(_band_sizes(self.tx, self.tw, self.pad[1], self.ox))
        return [Rect(y0, x0, ky, kx, bh, bw) for (y0, ky, bh) in rows for (x0, kx, bw) in cols]


def tile_grid(h: int, w: int, tile_size: int) -> TileGrid:
    ty, tx = math.ceil(h / tile_size), math.ceil(w / tile_size)
    return TileGrid(h, w, ty, tx, math.ceil(h / ty), math.ceil(w / tx))


def with_offsets(grid: TileGrid, rng: random.Random) -> TileGrid:
    """The same grid with seams moved by a random split of the padding (0 .. pad inclusive)."""
    pad_y, pad_x = grid.pad
    return TileGrid(grid.h, grid.w, grid.ty, grid.tx, grid.th, grid.tw,
                    rng.randint(0, pad_y), rng.randint(0, pad_x))


def offset_rng(seed: int, step: int, level: int) -> random.Random:
    """Seams depend on (seed, step, level) only, so cond and uncond calls of a step agree."""
    return random.Random(f"sloth-tiles:{seed}:{step}:{level}")


def _band_sizes(count: int, length: int, pad: int, offset: int) -> List[int]:
    sizes = [length] * count
    sizes[0] -= offset
    sizes[-1] -= pad - offset
    return sizes


def _runs(sizes: List[int]) -> List[Tuple[int, int, int]]:
    """(start, count, size) for each run of equal consecutive band sizes."""
    runs: List[Tuple[int, int, int]] = []
    start = 0
    for size in sizes:
        if runs and runs[-1][2] == size:
            s, n, _ = runs[-1]
            runs[-1] = (s, n + 1, size)
        else:
            runs.append((start, 1, size))
        start += size
    return runs


def _tiles_view(x: torch.Tensor, rect: Rect) -> torch.Tensor:
    """x: [B, h, w, C] grid -> view [B, ky, bh, kx, bw, C] of the cells of `rect` (no copy)."""
    region = x[:, rect.y0:rect.y0 + rect.ky * rect.bh, rect.x0:rect.x0 + rect.kx * rect.bw]
    return region.view(x.shape[0], rect.ky, rect.bh, rect.kx, rect.bw, x.shape[-1])


def tile(x: torch.Tensor, rect: Rect) -> torch.Tensor:
    """x: [B, h, w, C] grid -> [B*ky*kx, bh*bw, C] tokens of each tile of `rect` (batch-major)."""
    return tile_with_room(x, rect, 0)


def tile_with_room(x: torch.Tensor, rect: Rect, extra: int) -> torch.Tensor:
    """tile(x, rect) followed by `extra` rows per tile left for the caller to fill (e.g. a global
    sample, so K/V are built in one buffer without a concatenation copy): [B*ky*kx, bh*bw + extra, C]."""
    b, c = x.shape[0], x.shape[-1]
    out = x.new_empty(b * rect.tiles, rect.bh * rect.bw + extra, c)
    dst = out[:, :rect.bh * rect.bw].view(b, rect.ky, rect.kx, rect.bh, rect.bw, c)
    dst.copy_(_tiles_view(x, rect).permute(0, 1, 3, 2, 4, 5))
    return out


def pick_in_tiles(x: torch.Tensor, rect: Rect, window: Tuple[int, int]) -> torch.Tensor:
    """Every sy-th row and sx-th column of each tile of `rect`, counted from the tile's own top-left
    cell: x [B, h, w, C] -> [B*ky*kx, ceil(bh/sy)*ceil(bw/sx), C].
    The same tokens as a strided pick of tile(x, rect), copying only the picked ones."""
    sy, sx = window
    picked = _tiles_view(x, rect)[:, :, ::sy, :, ::sx]  # [B, ky, ph, kx, pw, C], a view
    b, ky, ph, kx, pw, c = picked.shape
    out = x.new_empty(b * ky * kx, ph * pw, c)
    out.view(b, ky, kx, ph, pw, c).copy_(picked.permute(0, 1, 3, 2, 4, 5))
    return out


def fill_per_tile(buf: torch.Tensor, tokens: torch.Tensor, start: int) -> None:
    """Copy tokens [B, M, C] into rows start..start+M of every tile of buf [B*tiles, L, C]
    (batch-major, as tile() orders them): one broadcast copy, no per-tile temporary."""
    b, m, c = tokens.shape
    buf[:, start:start + m].view(b, buf.shape[0] // b, m, c).copy_(tokens.unsqueeze(1))


def untile(tiles: torch.Tensor, rect: Rect, out: torch.Tensor) -> None:
    """Write tile tokens [B*ky*kx, bh*bw, C] back into their place in out: [B, h, w, C]."""
    # one copy, straight into out's cells (a rearrange to the region's shape would copy first)
    b, c = out.shape[0], out.shape[-1]
    src = tiles.reshape(b, rect.ky, rect.kx, rect.bh, rect.bw, c).permute(0, 1, 3, 2, 4, 5)
    _tiles_view(out, rect).copy_(src)


@dataclass(frozen=True)
class TileLayout:
    """What a tiled plan runs, as the maps draw it: the grid with this step's seams and the global sample."""

    grid: TileGrid
    global_window: Optional[Tuple[int, int]]  # (gy, gx): every gy-th row and gx-th column; None = not 2D
    global_1d: Optional[int]  # every g-th token of the row-major sequence (1D pool modes); None = not 1D
    tile_size: int  # the tile-size setting at this step
    global_ratio: float  # the global-ratio setting at this step
    title: str  # the method's title, for captions
    peak_time: Optional[float] = None  # where its schedule peaks (None: no schedule, only the seams move)

    def global_keys(self) -> int:
        """Tokens in the global sample (what each tile also attends to)."""
        h, w = self.grid.h, self.grid.w
        if self.global_1d is not None:
            return math.ceil(h * w / self.global_1d)
        if self.global_window is not None:
            gy, gx = self.global_window
            return math.ceil(h / gy) * math.ceil(w / gx)
        return 0
