"""Self-Attention Guidance: grid recovery, mask, blur, prediction conversions, map capture on the
real ldm UNet, and end-to-end sampling with a WebUI-shaped CFG denoiser (tests/sampling.py)."""
import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings as hsettings, strategies as st
from ldm.modules.attention import CrossAttention

from lib_sloth.patch import SlothPatch
from lib_sloth.prediction import NoiseSpace
from lib_sloth.guidance import GuidedStep
from lib_sloth.sag import SagPass, SagSettings, sag_guidance
from lib_sloth.sag_capture import attention_with_map, resolve_rows
from lib_sloth.sag_mask import (attention_mask, degrade, gaussian_blur, gaussian_kernel1d, mid_grid,
                                received_attention)
from lib_sloth.settings import SlothSettings, settings_from_dict
from noise import assert_near_truth, assert_within_noise, float64_copy, max_abs, noise_floor, run_float64
from sampling import CFGDenoiser, KDiffusionX0, TimestepEps, TimestepV, prompts, run, sd_alphas_cumprod
from unets import unet_inputs

SAG = SagSettings(enabled=True, scale=1.0)
SAG_OFF = SagSettings(enabled=True, scale=0.0)
# sizes the tiny UNets sample quickly: SD1.5 layout mid grid 2x3, SDXL layout 4x6
LAYOUTS = {"sd15": dict(hw=(16, 24), context_dim=768), "sdxl": dict(hw=(16, 24), context_dim=2048)}


def ceil_grid(H, W, d):
    return -(-H // d), -(-W // d)


def middle_attn1(unet):
    return unet.middle_block[1].transformer_blocks[0].attn1


# ---------------------------------------------------------------------------------------------
# Grid recovery
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("latent", [(65, 97), (97, 65), (64, 64), (96, 64), (64, 96), (128, 128), (104, 152),
                                    (152, 104), (144, 112), (65, 65), (72, 128), (256, 96), (40, 160)])
@pytest.mark.parametrize("downsample", [8, 4, 2])
def test_mid_grid_recovers_the_unet_grid_of_many_latent_sizes(latent, downsample):
    # 65x97 = 520x776 px; 104x152 = SDXL 832x1216; the UNet's stride-2 convs round up
    h, w = ceil_grid(*latent, downsample)
    assert mid_grid(h * w, latent) == (h, w)


@pytest.mark.parametrize("latent, shrunk", [((96, 64), (8, 5)), ((128, 96), (11, 8)), ((64, 64), (6, 6)),
                                            ((128, 128), (22, 22)), ((152, 104), (26, 18))])
def test_mid_grid_recovers_grids_shrunk_by_one_and_a_half(latent, shrunk):
    # Kohya-style deep shrink: hidden states interpolated by 1/1.5 (floor) before the middle block
    assert mid_grid(shrunk[0] * shrunk[1], latent) == shrunk


def test_mid_grid_ties_go_to_the_smaller_height():
    # 8 tokens on a square latent: 2x4 and 4x2 are equally far from sqrt(8)
    assert mid_grid(8, (64, 64)) == (2, 4)
    assert mid_grid(7, (64, 64)) in [(1, 7)]  # a prime count still factorises


@hsettings(max_examples=200, deadline=None)
@given(st.integers(16, 256), st.integers(16, 256), st.sampled_from([4, 8]))
def test_mid_grid_matches_the_unet_grid_for_any_realistic_latent(H, W, d):
    assume(0.25 <= H / W <= 4)
    h, w = ceil_grid(H, W, d)
    assert mid_grid(h * w, (H, W)) == (h, w)


# ---------------------------------------------------------------------------------------------
# Blur
# ---------------------------------------------------------------------------------------------
def test_blur_with_sigma_zero_is_identity_and_never_nan():
    x = torch.randn(2, 4, 9, 13)
    assert gaussian_kernel1d(0.0) is None
    assert gaussian_blur(x, 0.0) is x
    mask = torch.ones(2, 1, 9, 13)
    assert torch.equal(degrade(x, mask, 0.0), x)


@pytest.mark.parametrize("sigma, taps", [(0.01, 3), (0.3, 3), (1.0, 7), (2.0, 13), (3.3, 21), (3.4, 23), (10.0, 61)])
def test_blur_kernel_covers_three_sigma(sigma, taps):
    k = gaussian_kernel1d(sigma)
    assert k.numel() == taps and torch.isfinite(k).all()
    assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-6)
    assert torch.equal(k, k.flip(0))


def test_blur_with_large_sigma_is_finite_and_preserves_mass():
    # sigma 10 on a 16x24 latent: both axes too short to reflect, replicate padding instead
    x = torch.randn(2, 4, 16, 24)
    y = gaussian_blur(x, 10.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    c = torch.full((1, 4, 16, 24), 0.7)
    assert torch.allclose(gaussian_blur(c, 10.0), c)  # a normalised kernel keeps a flat field flat (ulps)
    # each output is a convex combination of inputs, up to the rounding of two 61-tap sums (16 ulps)
    slack = 16 * torch.finfo(torch.float32).eps * x.abs().max()
    assert (y.amin(dim=(2, 3)) >= x.amin(dim=(2, 3)) - slack).all()
    assert (y.amax(dim=(2, 3)) <= x.amax(dim=(2, 3)) + slack).all()


def test_blur_is_a_separable_2d_gaussian_with_reflect_padding():
    x = torch.randn(1, 3, 20, 27)
    k1 = gaussian_kernel1d(1.5)
    r = k1.numel() // 2
    k2 = torch.outer(k1, k1).expand(3, 1, -1, -1)
    direct = F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), k2, groups=3)
    truth = F.conv2d(F.pad(x.double(), (r, r, r, r), mode="reflect"), k2.double(), groups=3)
    assert_near_truth(gaussian_blur(x, 1.5), truth, direct, 2.0)  # separable: no more rounding than 2D


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 4)])
def test_blur_on_tiny_latents_stays_finite(hw):
    x = torch.randn(1, 4, *hw)
    y = gaussian_blur(x, 2.0)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_blur_keeps_fp16_dtype():
    x = torch.randn(1, 4, 12, 12).half()
    assert gaussian_blur(x, 2.0).dtype == torch.float16


# ---------------------------------------------------------------------------------------------
# Mask
# ---------------------------------------------------------------------------------------------
def one_hot_map(n, hot_key, heads=1, batch=1):
    """Every query puts all its attention on hot_key: [batch*heads, n, n]."""
    m = torch.zeros(batch * heads, n, n)
    m[:, :, hot_key] = 1.0
    return m


def test_mask_marks_the_tokens_that_receive_more_than_threshold():
    m = one_hot_map(6, hot_key=4)  # grid 2x3: key 4 = row 1, col 1
    mask = attention_mask(m, 1, (2, 3), threshold=1.0)
    expected = torch.zeros(1, 1, 2, 3)
    expected[0, 0, 1, 1] = 1
    assert torch.equal(mask, expected)
    assert attention_mask(m, 1, (2, 3), threshold=6.0).sum() == 0  # receives exactly 6: not above
    soft = torch.randn(1, 6, 6).softmax(-1)
    assert attention_mask(soft, 1, (2, 3), threshold=0.0).all()  # softmax: every key gets something


def test_mask_averages_heads_and_sums_over_queries():
    n = 6
    m = torch.cat([one_hot_map(n, 0), torch.full((1, n, n), 1.0 / n)])  # head 0 hot on key 0, head 1 uniform
    got = received_attention(m, heads=2)
    expected = torch.full((1, n), 0.5)
    expected[0, 0] = (n + 1) / 2
    assert torch.allclose(got, expected)


def test_each_image_gets_its_own_mask():
    m = torch.cat([one_hot_map(6, 0, heads=2), one_hot_map(6, 5, heads=2)])  # 2 images x 2 heads
    mask = attention_mask(m, 2, (4, 6), threshold=1.0)
    assert mask.shape == (2, 1, 4, 6)
    assert mask[0, 0, :2, :2].all() and mask[0].sum() == 4
    assert mask[1, 0, 2:, 4:].all() and mask[1].sum() == 4


def test_mask_upsamples_nearest_to_an_odd_latent():
    # 65x97 latent, SD1.5 mid grid 9x13; the hot key is cell (4, 7)
    m = one_hot_map(9 * 13, hot_key=4 * 13 + 7, heads=8)
    mask = attention_mask(m, 8, (65, 97), threshold=1.0)
    ref = F.interpolate(torch.eye(9 * 13)[4 * 13 + 7].reshape(1, 1, 9, 13), size=(65, 97), mode="nearest")
    assert mask.shape == (1, 1, 65, 97) and torch.equal(mask, ref)


def test_mask_uses_a_known_grid_over_factorisation():
    m = one_hot_map(6, hot_key=1)
    assert attention_mask(m, 1, (30, 10), 1.0, grid=(3, 2))[0, 0, 0, 5:].all()  # (0, 1) of 3x2
    with pytest.raises(ValueError):
        attention_mask(m, 1, (30, 10), 1.0, grid=(2, 2))


# ---------------------------------------------------------------------------------------------
# Prediction conversions
# ---------------------------------------------------------------------------------------------
def spaces(sigma, t):
    acp = sd_alphas_cumprod()
    x = torch.zeros(2, 4, 3, 5)
    return [NoiseSpace.from_sigma(torch.tensor([sigma, sigma * 0.5]), like=x),
            NoiseSpace.from_alphas_cumprod(acp, torch.tensor([t, t // 2]), like=x)]


@hsettings(max_examples=40, deadline=None)
@given(st.floats(0.03, 14.0), st.integers(1, 999))
def test_x0_eps_v_round_trips(sigma, t):
    g = torch.Generator().manual_seed(0)
    x, x0, eps = (torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    for space in spaces(sigma, t):
        assert torch.allclose(space.x0_from_eps(x, space.eps_from_x0(x, x0)), x0, atol=1e-4, rtol=1e-4)
        assert torch.allclose(space.x0_from_v(x, space.v_from_x0(x, x0)), x0, atol=1e-4, rtol=1e-4)
        for kind in ("x0", "eps", "v"):
            assert torch.allclose(space.from_x0(kind, x, space.to_x0(kind, x, eps)), eps, atol=1e-4, rtol=1e-4)


def test_conversions_match_the_textbook_definitions():
    acp = sd_alphas_cumprod()
    t = 700
    a, s = acp[t].sqrt().float(), (1 - acp[t]).sqrt().float()
    x0, eps = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    ts = NoiseSpace.from_alphas_cumprod(acp, t, like=x0)
    xt = a * x0 + s * eps
    assert torch.allclose(ts.eps_from_x0(xt, x0), eps, atol=1e-5)
    assert torch.allclose(ts.v_from_x0(xt, x0), a * eps - s * x0, atol=1e-5)
    # k-diffusion: x = x0 + sigma*eps; VDenoiser: x0 = x/(sigma^2+1) - sigma/sqrt(sigma^2+1) * v
    sigma = torch.tensor(2.5)
    ks = NoiseSpace.from_sigma(sigma, like=x0)
    x = x0 + sigma * eps
    v = ks.v_from_x0(x, x0)
    assert torch.allclose(x / (sigma ** 2 + 1) - sigma / (sigma ** 2 + 1).sqrt() * v, x0, atol=1e-5)
    # the two spaces describe the same latent: x_t = x / sqrt(sigma^2 + 1) at sigma = sqrt((1-acp)/acp)
    sig = ((1 - acp[t]) / acp[t]).sqrt().float()
    ks = NoiseSpace.from_sigma(sig, like=x0)
    x_k = x0 + sig * eps
    assert torch.allclose(ks.eps_from_x0(x_k, x0), ts.eps_from_x0(x_k / (sig ** 2 + 1).sqrt(), x0), atol=1e-5)


@pytest.mark.parametrize("which", [0, 1])
def test_renoise_keeps_the_uncond_implied_noise(which):
    space = spaces(3.0, 600)[which]
    x, x0, new = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    x_new = space.renoise(x, x0, new)
    assert torch.allclose(space.eps_from_x0(x_new, new), space.eps_from_x0(x, x0), atol=1e-5)


def test_resolve_rows_counts_from_each_calls_own_batch():
    assert resolve_rows(slice(-2, None), 5) == [3, 4]
    assert resolve_rows(slice(-2, None), 2) == [0, 1]  # A1111's separate uncond call
    assert resolve_rows([-1, 0], 5) == [0, 4]
    with pytest.raises(IndexError):
        resolve_rows([5], 5)


# ---------------------------------------------------------------------------------------------
# Map capture on the real UNet
# ---------------------------------------------------------------------------------------------
def capture(module, box):
    return module.register_forward_hook(lambda m, args, out: box.append(out.detach().clone()))


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_recorded_layer_output_equals_the_unpatched_layer(layout, request):
    unet = request.getfixturevalue(layout)
    x, t, c = unet_inputs(unet, 3, *LAYOUTS[layout]["hw"])
    layer, plain, recorded, inputs = middle_attn1(unet), [], [], []
    with torch.no_grad():
        hook = capture(layer, plain)
        grab = layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
        base = unet(x, t, c)
        hook.remove()
        grab.remove()
        # the float64 truth both fp32 paths are measured against (tests/noise.py)
        layer64 = float64_copy(layer)
        layer_truth = run_float64(layer64, inputs[0].double())
        unet_truth = run_float64(float64_copy(unet), x.double(), t, c.double())
        patch = SlothPatch(unet, SlothSettings())
        sag = SagPass(SAG, patch)
        with patch:
            sag.arm(slice(-2, None))
            hook = capture(layer, recorded)
            out = unet(x, t, c)
            hook.remove()
    # the explicit-map kernel rounds differently from ldm's own attention but not more: factor 2
    assert_near_truth(recorded[0], layer_truth, plain[0], 2.0, "recorded layer")
    assert_near_truth(out, unet_truth, base, 2.0, "UNet output")
    assert dict(patch.rewritten) == {"middle_block.1.transformer_blocks.0.attn1": 1}  # one layer, one call
    m = sag.recorded
    n = layer.heads
    assert m.probs.dtype == torch.float32 and m.heads == n and m.rows == 2
    h, w = ceil_grid(*LAYOUTS[layout]["hw"], 8 if layout == "sd15" else 4)
    assert m.probs.shape == (2 * n, h * w, h * w) and m.grid == (h, w)
    assert torch.allclose(m.probs.sum(-1), torch.ones(()), atol=1e-5)


def test_map_holds_only_the_uncond_rows(sd15):
    layer = middle_attn1(sd15)
    x = torch.randn(3, 6, layer.to_q.in_features)
    _, every = attention_with_map(layer, x, x, x, [0, 1, 2])
    out, some = attention_with_map(layer, x, x, x, [0, 2])
    heads = layer.heads
    layer64 = float64_copy(layer)
    with torch.no_grad():
        _, some64 = attention_with_map(layer64, x.double(), x.double(), x.double(), [0, 2])
        ref, truth = CrossAttention.forward(layer, x), run_float64(CrossAttention.forward, layer64, x.double())
    # a row subset is the same kernel on a smaller batch: as close to the truth as the full batch (factor 2)
    assert_near_truth(some, some64, torch.cat([every[:heads], every[2 * heads:]]), 2.0, "map rows")
    assert_near_truth(layer.to_out(out), truth, ref, 2.0, "layer output")


def test_unarmed_pass_records_nothing_and_is_bit_identical(sd15):
    x, t, c = unet_inputs(sd15, 2, 16, 24)
    with torch.no_grad():
        base = sd15(x, t, c)
        patch = SlothPatch(sd15, SlothSettings())
        sag = SagPass(SAG, patch)
        with patch:
            out = sd15(x, t, c)
    assert torch.equal(out, base) and sag.recorded is None and not patch.rewritten


def test_map_is_recorded_when_another_extension_shrank_the_middle_block(sdxl):
    # Kohya-style: the middle block runs on hidden states shrunk by 1/1.5 (6x9 -> 4x6 at /4),
    # a token count no power-of-2 level of the 24x36 latent has; the grid is then factorised
    mid = sdxl.middle_block
    shrink = mid.register_forward_pre_hook(lambda m, args: (F.interpolate(args[0], scale_factor=1 / 1.5),
                                                            *args[1:]))
    grow = mid.register_forward_hook(lambda m, args, out: F.interpolate(out, size=(6, 9)))
    try:
        x, t, c = unet_inputs(sdxl, 2, 24, 36)
        patch = SlothPatch(sdxl, SlothSettings())
        sag = SagPass(SAG, patch)
        with torch.no_grad(), patch:
            sag.arm([1])
            sdxl(x, t, c)
    finally:
        shrink.remove()
        grow.remove()
    m = sag.recorded
    assert m is not None and m.grid is None and m.probs.shape[-1] == 24
    assert mid_grid(24, (24, 36)) == (4, 6)
    assert attention_mask(m.probs, m.heads, (24, 36), 1.0).shape == (1, 1, 24, 36)


def test_recorded_layer_runs_full_attention_under_slothful(sd15):
    # keep_middle off: Slothful would pool the middle block's K/V; the recorded call must not
    s = settings_from_dict({"slothful.enabled": True, "slothful.keep_middle": False, "slothful.input.slothful": 4.0})
    x, t, c = unet_inputs(sd15, 2, 32, 32)
    patch = SlothPatch(sd15, s)
    sag = SagPass(SAG, patch)
    with torch.no_grad(), patch:
        patch.set_step(0, 1)
        sag.arm(slice(-1, None))
        sd15(x, t, c)
    assert sag.recorded.probs.shape == (8, 16, 16)  # 4x4 mid grid, keys not pooled
    assert len(patch.rewritten) > 1  # the other layers were rewritten by Slothful


# ---------------------------------------------------------------------------------------------
# End to end: Euler / DDIM loops with a WebUI-shaped CFG denoiser
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
@pytest.mark.parametrize("batch", [1, 3])
def test_sag_scale_zero_is_bit_identical_and_scale_one_changes_the_result(layout, batch, request):
    unet = request.getfixturevalue(layout)
    conds = [1, 2, 1] if batch == 3 else [1]  # image 1 has an AND-prompt: 4 cond rows, 3 uncond rows
    steps = 3 if batch == 1 else 2
    kw = dict(LAYOUTS[layout], batch=batch, conds_per_image=conds, steps=steps)
    base, _, _, _ = run(unet, **kw)
    off, off_model, off_sag, off_patch = run(unet, sag_settings=SAG_OFF, **kw)
    on, model, sag, patch = run(unet, sag_settings=SAG, **kw)
    assert torch.equal(off, base) and off_sag.extra_calls == 0 and not off_patch.guidances
    assert on.shape == base.shape and torch.isfinite(on).all()
    diff = (on - base).flatten(1).abs().amax(dim=1)
    assert (diff > 1e-3).all(), diff  # every image of the batch is guided
    assert model.calls == 2 * steps and sag.extra_calls == steps  # one extra model call per step, no more
    assert not patch.notes


def test_map_is_released_after_each_step(sd15):
    refs, holds = [], []

    def on_pass(patch, sag):
        keep = sag._keep

        def spy(sag_map):  # keep only a weak reference to every map recorded
            keep(sag_map)
            refs.append(weakref.ref(sag.recorded.probs))
            holds.append(sag.recorded is not None)

        sag._keep = spy

    _, _, sag, _ = run(sd15, sag_settings=SAG, steps=3, on_pass=on_pass, **LAYOUTS["sd15"])
    gc.collect()
    assert len(refs) == 3 and all(holds)
    assert sag.recorded is None and all(r() is None for r in refs)


def test_eps_predicting_sampler_gets_a_real_sag_effect(sd15):
    # the classic bug: x0 math applied to eps outputs (DDIM / PLMS / UniPC) does nothing or harm
    kw = dict(LAYOUTS["sd15"], sampler="ddim", steps=3, batch=1)
    base, _, _, _ = run(sd15, **kw)
    on, model, sag, _ = run(sd15, sag_settings=SAG, **kw)
    assert torch.isfinite(on).all() and sag.extra_calls == 3
    assert ((on - base).flatten(1).abs().amax(dim=1) > 1e-3).all()


def one_step(unet, space_kind, t, x0_latent, eps_noise, sag, batch=2, uncond_first=False, ctx=768):
    """One CFG+SAG step at timestep t; returns the result as x0 whatever the model predicts."""
    acp = sd_alphas_cumprod()
    conds, conds_list, uncond = prompts(ctx, [1] * batch)
    sigma = ((1 - acp[t]) / acp[t]).sqrt().float()
    x_k = x0_latent + sigma * eps_noise  # sigma-space latent
    with torch.no_grad():
        if space_kind == "x0":
            model = KDiffusionX0(unet, acp)
            den = CFGDenoiser(model, conds, conds_list, uncond, 5.0, sag, uncond_first)
            return den(x_k, sigma.expand(batch))
        model = (TimestepEps if space_kind == "eps" else TimestepV)(unet, acp)
        den = CFGDenoiser(model, conds, conds_list, uncond, 5.0, sag, uncond_first)
        x_t = x_k / (sigma ** 2 + 1).sqrt()
        tt = torch.full((batch,), t, dtype=torch.long)
        return model.space(tt, x_t).to_x0(space_kind, x_t, den(x_t, tt))


def test_x0_eps_and_v_models_get_the_same_guidance(sd15):
    # same UNet, same latent, one step: the eps and v paths (timestep space) must equal the x0
    # path (sigma space); this pins the conversions and the timestep-space re-noise together
    g = torch.Generator().manual_seed(7)
    x0, eps = torch.randn(2, 4, 16, 24, generator=g), torch.randn(2, 4, 16, 24, generator=g)
    results = {}
    for kind in ("x0", "eps", "v"):
        patch = SlothPatch(sd15, SlothSettings())
        sag = SagPass(SAG, patch)
        with patch:
            results[kind] = one_step(sd15, kind, 500, x0, eps, sag)
    plain = {kind: one_step(sd15, kind, 500, x0, eps, None) for kind in ("x0", "eps", "v")}
    # noise floor: the same change of prediction space without SAG. SAG converts twice more (the
    # uncond's x0 and its own call's prediction) and re-noises: factor 4
    for kind in ("eps", "v"):
        floor = noise_floor((plain[kind], plain["x0"]))
        tol = assert_within_noise(results[kind], results["x0"], floor, 4.0, kind)
        assert max_abs(results["x0"], plain["x0"]) > 100 * tol  # SAG's effect is far above it


def test_uncond_rows_first_gives_the_same_result_as_uncond_rows_last(sd15):
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(2, 4, 16, 24, generator=g), torch.randn(2, 4, 16, 24, generator=g)
    out = []
    for first in (False, True):
        patch = SlothPatch(sd15, SlothSettings())
        sag = SagPass(SAG, patch)
        with patch:
            out.append(one_step(sd15, "x0", 400, x0, eps, sag, uncond_first=first))
    plain = [one_step(sd15, "x0", 400, x0, eps, None, uncond_first=first) for first in (False, True)]
    # noise floor: the same row order change without SAG; SAG adds one more UNet call and the
    # difference of two predictions (factor 4, as for the adapters)
    tol = assert_within_noise(out[1], out[0], noise_floor((plain[0], plain[1])), 4.0)
    assert max_abs(out[0], plain[0]) > 100 * tol


def test_each_image_of_a_batch_uses_its_own_map(sd15):
    # image 0 guided alone equals image 0 guided in a batch of 3 (with its own cond/uncond)
    acp = sd_alphas_cumprod()
    conds, conds_list, uncond = prompts(768, [1, 1, 1])
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 4, 16, 24, generator=g) * 3
    sigma = torch.full((3,), 3.0)
    out, plain = [], []
    for rows in (3, 1):
        patch = SlothPatch(sd15, SlothSettings())
        sag = SagPass(SAG, patch)
        model = KDiffusionX0(sd15, acp)
        den = CFGDenoiser(model, conds[:rows], conds_list[:rows], uncond[:rows], 5.0, sag)
        with torch.no_grad(), patch:
            out.append(den(x[:rows], sigma[:rows]))
        with torch.no_grad():
            plain.append(CFGDenoiser(model, conds[:rows], conds_list[:rows], uncond[:rows], 5.0, None)(
                x[:rows], sigma[:rows]))
    # noise floor: batch 3 vs batch 1 without SAG; factor 4 as for the adapters (one more UNet call,
    # the difference of two predictions)
    tol = assert_within_noise(out[1], out[0][:1], noise_floor((plain[0][:1], plain[1])), 4.0)
    assert max_abs(out[0][:1], plain[0][:1]) > 100 * tol  # a map from another row would show


def test_step_without_a_real_uncond_is_skipped_cleanly(sd15):
    acp = sd_alphas_cumprod()
    conds, conds_list, uncond = prompts(768, [1])
    x, sigma = torch.randn(1, 4, 16, 24) * 3, torch.full((1,), 3.0)
    patch = SlothPatch(sd15, SlothSettings())
    sag = SagPass(SAG, patch)
    model = KDiffusionX0(sd15, acp)
    with torch.no_grad():
        plain = CFGDenoiser(model, conds, conds_list, uncond, 1.0)(x, sigma)
        with patch:
            fake = CFGDenoiser(model, conds, conds_list, uncond, 1.0, sag, uncond_is_real=False)(x, sigma)
            calls = model.calls
            # and a step whose model call never reached the recorded layer: no map, no extra call
            sag.arm(slice(-1, None))
            skipped = sag.guide(plain, GuidedStep(x, plain, None, lambda which, z: model(z, sigma, uncond)))
    assert torch.equal(fake, plain) and sag.extra_calls == 0 and calls == 2
    assert skipped is plain and any("no attention map" in n for n in patch.notes)


def test_sag_composes_with_slothful_and_its_extra_call_runs_under_the_patch(sd15):
    s = settings_from_dict({"slothful.enabled": True, "slothful.input.slothful": 4.0, "slothful.time_decay": 0.0})
    kw = dict(LAYOUTS["sd15"], steps=3)
    alone, _, _, alone_patch = run(sd15, s, **kw)
    both, _, sag, patch = run(sd15, s, sag_settings=SAG, **kw)
    first = "input_blocks.1.1.transformer_blocks.0.attn1"  # the shallowest self-attention
    assert alone_patch.rewritten[first] == 3 and patch.rewritten[first] == 6  # main call + SAG call
    assert patch.rewritten["middle_block.1.transformer_blocks.0.attn1"] >= 3  # recorded each step
    assert torch.isfinite(both).all() and not torch.allclose(both, alone, atol=1e-3)


def test_patch_is_gone_after_an_exception_mid_sampling(sd15):
    forward = CrossAttention.forward

    class Boom(Exception):
        pass

    def on_pass(patch, sag):
        guide = sag.guide

        def failing(*args, **kw):
            if patch.step == 1:
                raise Boom()
            return guide(*args, **kw)

        sag.guide = failing

    with pytest.raises(Boom):
        run(sd15, sag_settings=SAG, steps=3, on_pass=on_pass, **LAYOUTS["sd15"])
    assert CrossAttention.forward is forward and "forward" not in CrossAttention.__dict__ or \
        CrossAttention.__dict__["forward"] is forward
    x, t, c = unet_inputs(sd15, 1, 16, 24)
    with torch.no_grad():
        assert torch.isfinite(sd15(x, t, c)).all()


def test_guidance_rejects_a_map_of_the_wrong_batch():
    x = torch.randn(2, 4, 8, 8)
    bad_map = torch.full((3 * 4, 4, 4), 0.25)  # 3 images x 4 heads, but 2 uncond images
    with pytest.raises(ValueError, match="12 rows"):
        sag_guidance(x, x, x, bad_map, 4, SAG, lambda z: z)


def test_stop_recording_keeps_the_map_and_records_no_later_call(sd15):
    x, t, c = unet_inputs(sd15, 2, 16, 24)
    patch = SlothPatch(sd15, SlothSettings())
    sag = SagPass(SAG, patch)
    with torch.no_grad(), patch:
        sag.arm(slice(-1, None))
        sd15(x, t, c)
        first = sag.recorded
        sag.stop_recording()
        sd15(x[:1], t[:1], c[:1])  # e.g. a cond-only chunk after the uncond call
    assert sag.recorded is first and patch.rewritten["middle_block.1.transformer_blocks.0.attn1"] == 1
