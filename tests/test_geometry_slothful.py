"""Pure helpers of Slothful Attention: grids, windows, reductions, schedule."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from lib_sloth.geometry import grid_for_tokens, window_1d, window_2d
from lib_sloth.schedule import depth_ratio, progress, time_ratio
from lib_sloth.slothful import PoolBlock, Pooling, layer_stride, pooling_for, reduce_tokens

sizes = st.integers(min_value=1, max_value=40)


@given(H=st.integers(8, 200), W=st.integers(8, 200), k=st.integers(0, 3))
def test_grid_is_recovered_from_tokens_at_every_level(H, W, k):
    d = 2 ** k
    h, w = math.ceil(H / d), math.ceil(W / d)
    assert grid_for_tokens(h * w, (H, W)) == (h, w, d)


def test_grid_of_odd_latent_65x97():
    assert grid_for_tokens(65 * 97, (65, 97)) == (65, 97, 1)
    assert grid_for_tokens(33 * 49, (65, 97)) == (33, 49, 2)
    assert grid_for_tokens(9 * 13, (65, 97)) == (9, 13, 8)


def test_token_count_matching_no_grid_gives_none():
    assert grid_for_tokens(1000, (64, 64)) is None


@pytest.mark.parametrize("s, expected", [(2, (2, 1)), (4, (2, 2)), (6, (3, 2)), (1.5, (2, 1)), (9, (3, 3)),
                                         (10, (4, 3))])
def test_2d_window_from_stride(s, expected):
    assert window_2d(s, 100, 100) == expected


def test_2d_window_is_clipped_to_the_grid():
    # the node's order: sy = min(ceil(sqrt(s)), h) first, then sx = min(ceil(s / sy), w) from that sy
    assert window_2d(20, 4, 16) == (4, 5)  # 32x128 latent at downsample 8, strength 20 (not (4, 4))
    assert window_2d(50, 3, 100) == (3, 17)  # not (3, 7): the short grid gets a wider window
    assert window_2d(50, 3, 10) == (3, 10)  # and that is clipped to the width
    assert window_2d(20, 8, 16) == (5, 4)  # unclipped: unchanged
    assert window_1d(7.2, 5) == 5


def test_schedule_endpoints():
    assert progress(0, 20) == 0 and progress(19, 20) == 1 and progress(0, 1) == 0
    assert time_ratio(0.4, 0.4, 2.0) == 1.0
    assert time_ratio(0.9, 0.4, 0.0) == 1.0
    assert time_ratio(1.0, 0.4, 2.0) == pytest.approx(math.exp(-(0.6 * 2) ** 2))
    assert depth_ratio(2, 2.0) == 1 / 16 and depth_ratio(3, 0.0) == 1


def test_layer_stride_multiplies_strength_time_and_depth():
    block = PoolBlock(slothful=6.0, depth_decay=1.0)
    assert layer_stride(block, 1, 0.4, 0.4, 2.0) == pytest.approx(3.0)


def test_stride_at_most_one_means_untouched():
    assert pooling_for(PoolBlock(), 1.0, 64, 64) is None
    assert pooling_for(PoolBlock(), 0.3, 64, 64) is None


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, stride=st.floats(1.01, 50), mode=st.sampled_from(["1D_AVG", "1D_MAX", "2D_AVG", "2D_MAX"]),
       kb=st.sampled_from([0.0, 0.3, 1.0]), vb=st.sampled_from([0.0, 0.5, 1.0]))
def test_kv_token_count_after_reduction(h, w, stride, mode, kb, vb):
    pooling = pooling_for(PoolBlock(mode=mode, k_blend=kb, v_blend=vb), stride, h, w)
    if pooling is None:
        assert h * w == 1 or (mode.startswith("2D") and window_2d(stride, h, w) == (1, 1))
        return
    x = torch.randn(2, h * w, 3)
    k_src, v_src = reduce_tokens(x, h, w, pooling)
    sy, sx = pooling.window
    expected = math.ceil(h / sy) * math.ceil(w / sx) if mode.startswith("2D") else math.ceil(h * w / sx)
    assert k_src.shape == v_src.shape == (2, expected, 3)


def test_blend_zero_is_the_strided_pick():
    h, w = 7, 9
    x = torch.randn(1, h * w, 4)
    k_src, v_src = reduce_tokens(x, h, w, Pooling("2D_AVG", (3, 2), 0.0, 0.0))
    grid = x.view(1, h, w, 4)
    assert torch.equal(k_src, grid[:, ::3, ::2].reshape(1, -1, 4))
    assert v_src is k_src


def test_avg_edge_windows_average_only_their_in_grid_cells():
    h, w = 5, 5
    x = torch.arange(h * w, dtype=torch.float32).view(1, h * w, 1)
    k_src, _ = reduce_tokens(x, h, w, Pooling("2D_AVG", (2, 2), 1.0, 0.0))
    grid = x.view(h, w)
    assert k_src[0, -1, 0] == grid[4, 4]  # the corner window holds one real cell
    assert k_src[0, 2, 0] == grid[0:2, 4].mean()  # right edge: two real cells


def test_max_mode_takes_the_window_maximum():
    h, w = 4, 4
    x = torch.randn(2, h * w, 3)
    _, v_src = reduce_tokens(x, h, w, Pooling("2D_MAX", (2, 2), 0.0, 1.0))
    expected = F.max_pool2d(x.transpose(1, 2).reshape(2, 3, h, w), 2).flatten(2).transpose(1, 2)
    assert torch.equal(v_src, expected)


def test_k_and_v_blends_are_separate():
    x = torch.randn(1, 36, 2)
    k_src, v_src = reduce_tokens(x, 6, 6, Pooling("2D_AVG", (2, 2), 0.25, 0.75))
    pick = x.view(1, 6, 6, 2)[:, ::2, ::2].reshape(1, -1, 2)
    pool = F.avg_pool2d(x.transpose(1, 2).reshape(1, 2, 6, 6), 2).flatten(2).transpose(1, 2)
    # pooling 4 values in another order than avg_pool2d: a few fp32 ulps, far inside allclose's
    # default rtol 1e-5 (~80 ulps) on any CPU
    assert torch.allclose(k_src, torch.lerp(pick, pool, 0.25))
    assert torch.allclose(v_src, torch.lerp(pick, pool, 0.75))


def test_1d_mode_pools_runs_of_the_flat_sequence():
    x = torch.randn(1, 10, 2)
    k_src, _ = reduce_tokens(x, 2, 5, Pooling("1D_AVG", (1, 3), 1.0, 0.0))
    assert torch.allclose(k_src[0, 1], x[0, 3:6].mean(0))  # a 3-value mean: a few ulps (default rtol ~80)
    assert torch.allclose(k_src[0, 3], x[0, 9])


def test_pooling_hidden_states_equals_pooling_kv_for_avg():
    # to_k has no bias, so AVG over hidden states then projection == projection then AVG
    proj = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(2, 6 * 10, 8)
    pooling = Pooling("2D_AVG", (2, 3), 1.0, 1.0)
    k_src, _ = reduce_tokens(x, 6, 10, pooling)
    projected, _ = reduce_tokens(proj(x), 6, 10, pooling)
    # 8-term dot products and 6-value means of unit-scale values in two orders: rounding ~1e-6 on any
    # CPU (fp32 eps 1.2e-7 times a few terms); atol 1e-5 is a relative bound at this scale
    assert torch.allclose(proj(k_src), projected, atol=1e-5)
