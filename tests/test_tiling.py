"""Near-sighted tiling helpers: geometry, tile/untile, offsets, and attention against a naive reference."""
import math
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from lib_sloth.attention import attend
from lib_sloth.geometry import window_2d
from lib_sloth.nearsighted import global_sources, nearsighted_attention, tile_attention
from lib_sloth.slothful import PoolBlock, pooling_for, reduce_tokens
from lib_sloth.tiling import TileGrid, offset_rng, tile, tile_grid, untile, with_offsets
from noise import assert_near_truth, float64_copy


def tiled_attention(layer, x, grid, global_stride, pool_block, pool_stride, upcast):
    """The kernel the planners pick: Near-sighted Tile without a pool block, Near-sighted Attention with one."""
    if pool_block is None:
        return tile_attention(layer, x, x, x, grid, global_stride, upcast)
    return nearsighted_attention(layer, x, x, x, grid, global_stride, pool_block, pool_stride, upcast)


def grids():
    return st.builds(lambda h, w, t, seed: with_offsets(tile_grid(h, w, t), random.Random(seed)),
                     st.integers(1, 90), st.integers(1, 90), st.integers(4, 40), st.integers(0, 10_000))


@settings(max_examples=150, deadline=None)
@given(grid=grids())
def test_rects_cover_every_cell_exactly_once(grid):
    seen = torch.zeros(grid.h, grid.w, dtype=torch.int32)
    for r in grid.rects():
        assert r.bh >= 1 and r.bw >= 1
        seen[r.y0:r.y0 + r.ky * r.bh, r.x0:r.x0 + r.kx * r.bw] += 1
    assert torch.all(seen == 1)  # padding never exists as a cell: it cannot be a query, key or value


@settings(max_examples=100, deadline=None)
@given(grid=grids(), b=st.integers(1, 3))
def test_untile_of_tile_is_identity(grid, b):
    x = torch.randn(b, grid.h, grid.w, 5)
    out = torch.full_like(x, float("nan"))
    for r in grid.rects():
        t = tile(x, r)
        assert t.shape == (b * r.tiles, r.bh * r.bw, 5)
        untile(t, r, out)
    assert torch.equal(out, x)


@given(grid=grids())
def test_tile_shape_follows_the_spec(grid):
    assert grid.th == math.ceil(grid.h / grid.ty) and grid.tw == math.ceil(grid.w / grid.tx)
    pad_y, pad_x = grid.pad
    assert 0 <= grid.oy <= pad_y and 0 <= grid.ox <= pad_x
    assert sum(r.ky for r in grid.rects()[:: len({r.x0 for r in grid.rects()})]) == grid.ty


def test_offsets_are_reproducible_for_the_same_seed_and_step():
    g = tile_grid(97, 65, 24)
    a = [with_offsets(g, offset_rng(7, step, 0)) for step in range(20)]
    b = [with_offsets(g, offset_rng(7, step, 0)) for step in range(20)]
    assert a == b
    assert len({(t.oy, t.ox) for t in a}) > 1  # seams move between steps
    assert with_offsets(g, offset_rng(8, 0, 0)) != a[0] or with_offsets(g, offset_rng(8, 1, 0)) != a[1]


def test_offset_can_reach_both_ends_of_the_padding():
    g = tile_grid(65, 65, 32)  # 3 tiles of 22: 1 padding cell per axis
    seen = {with_offsets(g, offset_rng(s, 0, 0)).oy for s in range(64)}
    assert seen == {0, 1}


class Layer(torch.nn.Module):
    """The projections a CrossAttention layer has (random, bias-free like ldm's)."""

    def __init__(self, c=16, heads=2):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(c, c, bias=False) for _ in range(3))


def naive_window(s, h, w):
    """The node's 2D window, written from its documented rule: sy clipped to h first, sx from it."""
    sy = min(math.ceil(math.sqrt(s)), h)
    return sy, min(math.ceil(s / sy), w)


def naive_global(x, h, w, global_stride, block, local_stride):
    """Near-sighted Attention's global K/V sources, from the documented semantics: the layer's
    Slothful reduction (mode, blends) at the global stride over the unpadded image; the pooled
    window has the local reduction's size, starts at each picked token and is cut at the edges."""
    b, n, c = x.shape
    if block.mode.startswith("2D"):
        (gy, gx), (ky, kx) = naive_window(global_stride, h, w), naive_window(max(local_stride, 1), h, w)
        xg = x.view(b, h, w, c)
        cells = [xg[:, y:y + ky, x0:x0 + kx].reshape(b, -1, c) for y in range(0, h, gy) for x0 in range(0, w, gx)]
    else:
        g, k = min(math.ceil(global_stride), n), min(math.ceil(max(local_stride, 1)), n)
        cells = [x[:, p:p + k] for p in range(0, n, g)]
    pick = torch.stack([t[:, 0] for t in cells], 1)  # the window's first cell is the picked token
    pool = torch.stack([t.amax(1) if block.mode.endswith("MAX") else t.mean(1) for t in cells], 1)
    return pick + block.k_blend * (pool - pick), pick + block.v_blend * (pool - pick)


def naive_tiled(layer, x, grid: TileGrid, global_stride, block, stride):
    """Reference written directly from the spec: loop over tiles, compute bounds from the padded layout."""
    b, n, c = x.shape
    xg = x.view(b, grid.h, grid.w, c)
    out = torch.zeros(b, grid.h, grid.w, c, dtype=x.dtype)
    for iy in range(grid.ty):
        for ix in range(grid.tx):
            y0, y1 = max(0, iy * grid.th - grid.oy), min(grid.h, (iy + 1) * grid.th - grid.oy)
            x0, x1 = max(0, ix * grid.tw - grid.ox), min(grid.w, (ix + 1) * grid.tw - grid.ox)
            local = xg[:, y0:y1, x0:x1].reshape(b, -1, c)
            k_src = v_src = local
            if block is not None:
                pooling = pooling_for(block, stride, y1 - y0, x1 - x0)
                if pooling is not None:
                    k_src, v_src = reduce_tokens(local, y1 - y0, x1 - x0, pooling)
            if global_stride is not None and block is None:  # Near-sighted Tile: strided 2D pick
                gy, gx = naive_window(global_stride, grid.h, grid.w)
                picked = xg[:, ::gy, ::gx].reshape(b, -1, c)
                k_src, v_src = torch.cat([k_src, picked], 1), torch.cat([v_src, picked], 1)
            elif global_stride is not None:
                gk, gv = naive_global(x, grid.h, grid.w, global_stride, block, stride)
                k_src, v_src = torch.cat([k_src, gk], 1), torch.cat([v_src, gv], 1)
            o = attend(layer.to_q(local), layer.to_k(k_src), layer.to_v(v_src), layer.heads)
            out[:, y0:y1, x0:x1] = o.view(b, y1 - y0, x1 - x0, c)
    return out.view(b, n, c)


@pytest.mark.parametrize("h, w, size, seed, gstride", [(65, 97, 24, 0, 20.0), (32, 32, 16, 1, None),
                                                       (17, 40, 16, 2, 6.0), (9, 50, 16, 3, 8.0)])
def test_tiled_attention_matches_naive_reference(h, w, size, seed, gstride):
    torch.manual_seed(seed)
    layer = Layer()
    x = torch.randn(2, h * w, 16)
    grid = with_offsets(tile_grid(h, w, size), random.Random(seed))
    got = tiled_attention(layer, x, grid, gstride, None, 1.0, upcast=False)
    truth = naive_tiled(float64_copy(layer), x.double(), grid, gstride, None, 1.0)
    # as close to the float64 truth as the naive fp32 loop (other shapes, same math): factor 2
    assert_near_truth(got, truth, naive_tiled(layer, x, grid, gstride, None, 1.0), 2.0)


@pytest.mark.parametrize("mode", ["1D_AVG", "1D_MAX", "2D_AVG", "2D_MAX"])
@pytest.mark.parametrize("blends", [(0.0, 0.0), (0.5, 0.5), (0.3, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("h, w, global_stride, local_stride", [(48, 48, 20.0, 6.0), (17, 40, 9.0, 5.0),
                                                               (4, 16, 30.0, 20.0), (9, 50, 8.0, 0.7)])
def test_nearsighted_global_sample_is_the_layer_reduction_at_the_global_stride(mode, blends, h, w, global_stride,
                                                                              local_stride):
    x = torch.randn(2, h * w, 8, generator=torch.Generator().manual_seed(h * w))
    block = PoolBlock(mode=mode, k_blend=blends[0], v_blend=blends[1])
    got = global_sources(x, h, w, global_stride, block, local_stride)
    truth = naive_global(x.double(), h, w, global_stride, block, local_stride)
    peer = naive_global(x, h, w, global_stride, block, local_stride)
    for g, t, p in zip(got, truth, peer):
        assert g.shape == t.shape  # as many pooled tokens as picked ones: edge windows are kept
        assert_near_truth(g, t, p, 2.0)  # means of a few values in another order: a few ulps


def test_nearsighted_global_sample_in_1d_mode_picks_every_nth_token_in_row_order():
    h, w = 6, 10
    x = torch.arange(h * w, dtype=torch.float32).view(1, h * w, 1)
    k_src, _ = global_sources(x, h, w, 7.0, PoolBlock(mode="1D_AVG"), 3.0)
    assert k_src.flatten().tolist() == list(range(0, 60, 7))  # not a 2D grid of rows and columns
    k_src, _ = global_sources(x, h, w, 7.0, PoolBlock(mode="2D_AVG"), 3.0)
    assert k_src.flatten().tolist() == [0, 3, 6, 9, 30, 33, 36, 39]  # 2D: window (3, 3), rows 0, 3, cols 0-9 by 3
    k_src, v_src = global_sources(x, h, w, 7.0, PoolBlock(mode="1D_MAX", k_blend=1.0, v_blend=0.5), 3.0)
    assert k_src.flatten().tolist() == [min(p + 2, 59) for p in range(0, 60, 7)]  # max of the 3-token window
    assert v_src.flatten().tolist() == [p + 0.5 * (min(p + 2, 59) - p) for p in range(0, 60, 7)]


@pytest.mark.parametrize("mode", ["1D_AVG", "2D_AVG", "1D_MAX", "2D_MAX"])
def test_pooled_tiles_match_naive_reference(mode):
    torch.manual_seed(4)
    layer = Layer()
    h, w = 41, 30
    x = torch.randn(1, h * w, 16)
    grid = with_offsets(tile_grid(h, w, 16), random.Random(9))
    block = PoolBlock(mode=mode, k_blend=0.3, v_blend=0.6)
    got = tiled_attention(layer, x, grid, 9.0, block, 5.0, upcast=False)
    truth = naive_tiled(float64_copy(layer), x.double(), grid, 9.0, block, 5.0)
    assert_near_truth(got, truth, naive_tiled(layer, x, grid, 9.0, block, 5.0), 2.0)  # as above


def test_global_tokens_let_a_tile_see_the_rest_of_the_image():
    torch.manual_seed(5)
    layer = Layer()
    h = w = 32
    x = torch.randn(1, h * w, 16)
    grid = tile_grid(h, w, 16)
    local = tiled_attention(layer, x, grid, None, None, 1.0, upcast=False)
    x2 = x.clone().view(1, h, w, 16)
    x2[:, 16:, 16:] += 3.0  # change only the bottom-right tile
    x2 = x2.view(1, h * w, 16)
    local2 = tiled_attention(layer, x2, grid, None, None, 1.0, upcast=False)
    glob2 = tiled_attention(layer, x2, grid, 4.0, None, 1.0, upcast=False)
    glob = tiled_attention(layer, x, grid, 4.0, None, 1.0, upcast=False)
    top_left = slice(0, 16)
    view = lambda t: t.view(1, h, w, 16)[:, top_left, top_left]  # noqa: E731
    assert torch.equal(view(local), view(local2))  # purely local: no influence across tiles
    assert not torch.allclose(view(glob), view(glob2))  # global view: influence


def test_upcast_returns_input_dtype():
    layer = Layer().to(torch.bfloat16)
    x = torch.randn(1, 20 * 20, 16, dtype=torch.bfloat16)
    out = tiled_attention(layer, x, tile_grid(20, 20, 16), 4.0, None, 1.0, upcast=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
