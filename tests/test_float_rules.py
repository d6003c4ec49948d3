"""Where a float becomes a window, stride or tile size, the engine's integer equals the same rule in
exact rational arithmetic (fractions.Fraction of the decimal slider values), over the sliders' grid.

The rules (the original node, MitoshiroPJ/comfyui_nearsighted_attention, nearsighted_attention.py):
lerp(a, b, t) = a·(1 − t) + b·t (line 14-15), tile = round(lerp(base, peak, t)) (line 220; ours
rounds halves up), global stride = max(1, stride)·ty·tx / global_ratio (line 260), 2D window
sy = min(⌈√s⌉, h), sx = min(⌈s / sy⌉, w) (lines 48-49), 1D window ⌈s⌉ (line 29).
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

import lib_sloth.nearsighted as nearsighted
from lib_sloth import schedule
from lib_sloth.geometry import snap, window_1d, window_2d
from lib_sloth.layer_call import LayerCall, TokenGrid
from lib_sloth.nearsighted import NearSightedPlan, NearSightedSettings, nearsighted_shape, plan_nearsighted
from lib_sloth.sag_mask import gaussian_kernel1d
from lib_sloth.settings import iter_fields
from lib_sloth.slothful import PoolBlock, layer_stride, pooling_for
from lib_sloth.webui.ui import slider_step


def grid_of(path: str):
    """Every value of a setting's slider, as (float the UI sends, exact decimal)."""
    spec = next(s for s in iter_fields() if s.path == path)
    step = Fraction(str(slider_step(spec)))
    lo, hi = Fraction(str(spec.lo)), Fraction(str(spec.hi))
    n = int((hi - lo) / step)
    return [(float(lo + i * step), lo + i * step) for i in range(n + 1)]


def exact_ceil_sqrt(s: Fraction) -> int:
    k = math.isqrt(math.floor(s))
    while k * k < s:
        k += 1
    return k


def exact_window_2d(s: Fraction, h: int, w: int):
    sy = min(exact_ceil_sqrt(s), h)
    return sy, min(math.ceil(s / sy), w)


def exact_tiled(base_g, peak_g, base_t, peak_t, t, s, h, w):
    """(tile size, (2D global window, 1D global step) or None) of one level-0 call, exactly."""
    tile = math.floor(base_t * (1 - t) + peak_t * t + Fraction(1, 2))
    ratio = base_g * (1 - t) + peak_g * t
    tiles = math.ceil(Fraction(h, tile)) * math.ceil(Fraction(w, tile))
    if tiles == 1 or ratio == 0:
        return tile, None
    g = max(Fraction(1), s) * tiles / ratio
    return tile, (exact_window_2d(g, h, w), min(math.ceil(g), h * w))


def engine_tiled(settings, h, w):
    call = LayerCall("input", TokenGrid(h, w, 0), 2, 0, 1, 0)
    tile, _ = nearsighted_shape(settings, call.progress)
    runner = plan_nearsighted(settings, call)
    if not isinstance(runner, NearSightedPlan) or runner.global_stride is None:
        return tile, None
    g = runner.global_stride
    return tile, (window_2d(g, h, w), window_1d(g, h * w))


def nsa(base_g, peak_g, s, base_t=24, peak_t=24, mode="2D_AVG", time_decay=0.0):
    block = PoolBlock(mode=mode, slothful=s)
    return NearSightedSettings(enabled=True, time_decay=time_decay, base_tile_size=base_t, peak_tile_size=peak_t,
                               base_global_ratio=base_g, peak_global_ratio=peak_g, input=block, output=block)


def test_the_smallest_reported_case_gets_the_nodes_global_window():
    # 48 x 48 latent, tile 24 (2 x 2 tiles), strength 4.5, global 0.2 -> 0.9 at t = 1: stride 20
    for mode in ("2D_AVG", "1D_AVG"):
        runner = plan_nearsighted(nsa(0.2, 0.9, 4.5, mode=mode), LayerCall("input", TokenGrid(48, 48, 0), 2, 0, 1, 0))
        assert runner.global_stride == 20.0
        assert window_2d(runner.global_stride, 48, 48) == (5, 4)  # was (5, 5)
        assert window_1d(runner.global_stride, 48 * 48) == 20  # was 21


def test_the_default_tile_schedule_at_its_peak_step_gets_the_nodes_global_window():
    # tile 24 -> 32, time decay 2, step 4 of 11 is the peak (progress 0.4): tile 32, ratio 0.9
    s = nsa(0.2, 0.9, 4.5, base_t=24, peak_t=32, time_decay=2.0)
    runner = plan_nearsighted(s, LayerCall("input", TokenGrid(48, 48, 0), 2, 4, 11, 0))
    assert nearsighted_shape(s, 0.4) == (32, 0.9)
    assert window_2d(runner.global_stride, 48, 48) == (5, 4)


def test_lerp_reaches_both_ends_exactly_on_the_whole_slider_grid():
    ratios = [v for v, _ in grid_of("nearsighted.base_global_ratio")]
    for a in ratios:
        for b in ratios:
            assert schedule.lerp(a, b, 1.0) == b and schedule.lerp(a, b, 0.0) == a


@pytest.mark.parametrize("strength", [4.0, 4.5, 6.0])
def test_global_window_equals_exact_arithmetic_for_every_slider_pair_at_the_peak(strength):
    ratios = grid_of("nearsighted.base_global_ratio")
    exact_s = Fraction(str(strength))
    flips = 0
    for base, base_x in ratios:
        for peak, peak_x in ratios:
            got = engine_tiled(nsa(base, peak, strength), 48, 48)
            want = exact_tiled(base_x, peak_x, 24, 24, Fraction(1), exact_s, 48, 48)
            assert got == want, (base, peak, strength)
            # the old a + (b - a)·t with a plain ceil: the pairs it got wrong (this grid can tell)
            old = base + (peak - base) * 1.0
            flips += want[1] is not None and math.ceil(max(1.0, strength) * 4 / old) != want[1][1]
    assert flips > 0


def test_tile_size_and_global_ratio_equal_exact_arithmetic_along_the_schedule(monkeypatch):
    # t on the 0.1 grid (as a float, like the time ratio), every tile pair and a 0.1 grid of ratios
    tiles = [(v, x) for v, x in grid_of("nearsighted.base_tile_size")]
    ratios = [(v, x) for v, x in grid_of("nearsighted.base_global_ratio")][::10]
    for k in range(11):
        t, t_x = k / 10, Fraction(k, 10)
        monkeypatch.setattr(schedule, "time_ratio", lambda *_: t)
        for base_t, bt_x in tiles[::3]:
            for peak_t, pt_x in tiles[::3]:
                s = nsa(0.5, 0.5, 6.0, base_t=int(base_t), peak_t=int(peak_t))
                assert nearsighted_shape(s, 0.0)[0] == math.floor(bt_x * (1 - t_x) + pt_x * t_x + Fraction(1, 2))
        for base, base_x in ratios:
            for peak, peak_x in ratios:
                got = engine_tiled(nsa(base, peak, 4.5, 24, 32), 48, 48)
                assert got == exact_tiled(base_x, peak_x, 24, 32, t_x, Fraction(9, 2), 48, 48), (t, base, peak)


def test_global_windows_equal_exact_arithmetic_over_strengths_ratios_and_tile_counts():
    for s, s_x in grid_of("nearsighted.input.slothful"):
        for r, r_x in grid_of("nearsighted.peak_global_ratio")[1:]:
            for tiles in (2, 3, 4, 6, 9, 16):
                g = max(1.0, s) * tiles / r
                g_x = max(Fraction(1), s_x) * tiles / r_x
                assert window_2d(g, 96, 96) == exact_window_2d(g_x, 96, 96), (s, r, tiles)
                assert window_1d(g, 96 * 96) == min(math.ceil(g_x), 96 * 96), (s, r, tiles)


def test_slothful_windows_equal_exact_arithmetic_where_the_depth_ratio_is_rational():
    for s, s_x in grid_of("slothful.input.slothful"):
        for decay, decay_x in grid_of("slothful.input.depth_decay"):
            for level in range(4):
                if (level * decay_x).denominator != 1:
                    continue  # 2^(-level·decay) is irrational: no exact rule to compare with
                stride_x = s_x / 2 ** int(level * decay_x)
                block = PoolBlock(slothful=s, depth_decay=decay)
                stride = layer_stride(block, level, 0.0, 0.4, 0.0)
                pooling = pooling_for(block, stride, 64, 64)
                want = None if stride_x <= 1 or exact_window_2d(stride_x, 64, 64) == (1, 1) \
                    else exact_window_2d(stride_x, 64, 64)
                assert (pooling.window if pooling else None) == want, (s, decay, level)


def test_blur_taps_equal_exact_arithmetic_for_every_sigma():
    for sigma, sigma_x in grid_of("sag.blur_sigma")[1:]:
        assert len(gaussian_kernel1d(sigma)) == 2 * max(1, math.ceil(3 * sigma_x)) + 1, sigma


def test_snap_moves_only_values_within_1e_9_of_an_integer():
    assert snap(20.000000000000004) == 20.0 and snap(3.9999999999999996) == 4.0
    assert snap(20.000001) == 20.000001 and snap(0.5) == 0.5
    assert nearsighted.window_2d is window_2d  # the kernel calls the snapped window
