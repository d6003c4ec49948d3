"""Perturbed-Attention Guidance on the real ldm UNet, driven the way a WebUI drives it: the perturbed
layer's output, neutral settings, the step window, batched vs separate extra pass, eps models, and
the combination with SEG, SAG and the rewrites. (ComfyUI parity: tests/forge_main_cases.py.)"""
import pytest
import torch

from lib_sloth.guidance import GuidedStep
from lib_sloth.pag import PagPass, PagSettings
from lib_sloth.patch import SlothPatch
from lib_sloth.prediction import NoiseSpace
from lib_sloth.seg import SegPass, SegSettings
from lib_sloth.settings import SlothSettings, settings_from_dict
from noise import assert_near_truth, assert_within_noise, float64_copy, max_abs, noise_floor, one_ulp_apart, run_float64
from sampling import sd_alphas_cumprod
from unets import unet_inputs

PAG = PagSettings(enabled=True, scale=3.0)
CFG = 5.0
# the guided step carries the rounding of three predictions (cfg, cond, perturbed) where the plain
# comparison carries one or two: 4, as SAG (tests/noise.py SAG_FACTOR), measured margins below 2
BATCH_FACTOR = 4.0


def middle_attn1(unet):
    return unet.middle_block[1].transformer_blocks[0].attn1


def conds(unet, batch=1, seed=3):
    x, t, c = unet_inputs(unet, 2 * batch, 16, 24, seed=seed)
    return x[:batch], t[:batch], c[:batch], c[batch:]


def plain_step(unet, x, t, c, u, rows=2):
    """CFG of one step; rows=3 lays the call out as [cond, uncond, cond] (the batched PAG shape)."""
    b = x.shape[0]
    xs, ts, cs = [x, x] + [x] * (rows - 2), [t, t] + [t] * (rows - 2), [c, u] + [c] * (rows - 2)
    out = unet(torch.cat(xs), torch.cat(ts), torch.cat(cs))
    cond, uncond = out[:b], out[b:2 * b]
    return uncond + CFG * (cond - uncond), cond, out


def guided_step(unet, guidance, x, t, c, u, batched):
    """One CFG step driven the way the adapters drive a guidance: batched (its perturbed cond rows
    appended to the CFG call, their prediction handed over in GuidedStep.batched) or separate."""
    b = x.shape[0]

    def call_model(which, xi):
        return unet(xi, t, c if which == "cond" else u)

    if batched and guidance.batched_now():
        with guidance.perturbing(list(range(2 * b, 3 * b))):
            cfg, cond, out = plain_step(unet, x, t, c, u, rows=3)
        return guidance.guide(cfg, GuidedStep(x, out[b:2 * b], cond, call_model, batched={guidance: out[2 * b:]}))
    cfg, cond, out = plain_step(unet, x, t, c, u)
    return guidance.guide(cfg, GuidedStep(x, out[b:2 * b], cond, call_model))


def run_step(unet, settings, x, t, c, u, batched=False, step=(0, 1), kv_source=None, sloth=None, cls=PagPass):
    patch = SlothPatch(unet, sloth or SlothSettings(), seed=1, kv_source=kv_source)
    guidance = cls(settings, patch)
    with torch.no_grad(), patch:
        patch.set_step(*step)
        out = guided_step(unet, guidance, x, t, c, u, batched)
    return out, guidance, patch


# ---- the perturbed layer -------------------------------------------------------------------------
@pytest.mark.parametrize("hypernetwork", [False, True])
def test_perturbed_layer_returns_to_out_of_to_v(sd15, hypernetwork):
    """PAG's layer is to_out(to_v(v_in)); with an A1111 hypernetwork v_in is its transformed context."""
    layer = middle_attn1(sd15)
    source = (lambda h: (h * 1.5, h.flip(1) + 0.25)) if hypernetwork else None
    x, t, c, u = conds(sd15)
    seen = []
    hook = layer.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    try:
        patch = SlothPatch(sd15, SlothSettings(), seed=1, kv_source=source)
        pag = PagPass(PAG, patch)
        with torch.no_grad(), patch, patch.extra_pass(pag):
            sd15(x, t, c)
    finally:
        hook.remove()
    (h, out), = seen
    v_in = source(h)[1] if hypernetwork else h
    with torch.no_grad():
        assert torch.equal(out, layer.to_out(layer.to_v(v_in)))
    assert dict(patch.rewritten) == {"middle_block.1.transformer_blocks.0.attn1": 1}


def test_only_the_perturbed_rows_see_the_identity_attention(sd15):
    layer = middle_attn1(sd15)
    x, t, c, u = conds(sd15)
    seen = []
    hook = layer.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    try:
        patch = SlothPatch(sd15, SlothSettings(), seed=1)
        pag = PagPass(PAG, patch)
        with torch.no_grad(), patch, pag.perturbing([2]):
            sd15(torch.cat([x, x, x]), torch.cat([t, t, t]), torch.cat([c, u, c]))
    finally:
        hook.remove()
    h, out = seen[0]
    with torch.no_grad():
        assert torch.equal(out[2:], layer.to_out(layer.to_v(h[2:])))
        truth = run_float64(float64_copy(layer), h[:2].double())
    # the other rows run full attention (SDPA where ldm runs its own kernel): as close to the truth
    assert_near_truth(out[:2], truth, layer(h[:2]), 2.0, "cond and uncond rows")


# ---- neutral settings and the window -------------------------------------------------------------
@pytest.mark.parametrize("settings", [PagSettings(enabled=True, scale=0.0), PagSettings(enabled=False),
                                      PagSettings(enabled=True, start=0.7, end=0.3),
                                      SegSettings(enabled=True, blur_sigma=0.0)])
@pytest.mark.parametrize("batched", [False, True])
def test_neutral_settings_are_bit_identical_with_no_extra_call(sd15, settings, batched):
    x, t, c, u = conds(sd15)
    with torch.no_grad():
        plain, _, _ = plain_step(sd15, x, t, c, u)
    cls = SegPass if isinstance(settings, SegSettings) else PagPass
    out, guidance, patch = run_step(sd15, settings, x, t, c, u, batched=batched, cls=cls)
    assert torch.equal(out, plain)
    assert guidance.extra_calls == 0 and not patch.rewritten and not patch.installed


def test_outside_the_window_the_step_is_plain_cfg_and_makes_no_extra_call(sd15):
    x, t, c, u = conds(sd15)
    with torch.no_grad():
        plain, _, _ = plain_step(sd15, x, t, c, u)
    late = PagSettings(enabled=True, start=0.5, end=1.0)
    calls = []
    for step in range(5):
        out, guidance, _ = run_step(sd15, late, x, t, c, u, step=(step, 5))
        calls.append(guidance.extra_calls)
        assert torch.equal(out, plain) == (step < 2)
    assert calls == [0, 0, 1, 1, 1]


# ---- batched vs separate -------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
@pytest.mark.parametrize("cls, settings", [(PagPass, PAG), (SegPass, SegSettings(enabled=True, blur_sigma=1.0)),
                                           (SegPass, SegSettings(enabled=True))])
def test_batched_equals_separate_within_the_noise_floor(layout, cls, settings, request):
    unet = request.getfixturevalue(layout)
    x, t, c, u = conds(unet, batch=2)
    batched, g_batched, _ = run_step(unet, settings, x, t, c, u, batched=True, cls=cls)
    separate, g_separate, _ = run_step(unet, settings, x, t, c, u, batched=False, cls=cls)
    assert g_batched.extra_calls == 0 and g_separate.extra_calls == 1
    with torch.no_grad():
        plain2, _, _ = plain_step(unet, x, t, c, u)
        plain3, _, _ = plain_step(unet, x, t, c, u, rows=3)
    apart, _, _ = run_step(unet, settings, one_ulp_apart(x, torch.Generator().manual_seed(0)), t, c, u, cls=cls)
    # floor: the plain step's batch-shape rounding, and how far the guided step carries one rounding
    floor = noise_floor((plain3, plain2), (apart, separate))
    tol = assert_within_noise(batched, separate, floor, BATCH_FACTOR, f"{cls.name} {layout}")
    assert max_abs(separate, plain2) > 100 * tol  # the guidance's effect is far above it


# ---- prediction kinds ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["eps", "v"])
def test_eps_and_v_models_get_the_guidance_of_the_x0_model(kind):
    g = torch.Generator().manual_seed(0)
    x0s = torch.randn(3, 2, 4, 6, 6, generator=g)  # cfg, cond, perturbed as x0
    x = torch.randn(2, 4, 6, 6, generator=g)
    space = NoiseSpace.from_alphas_cumprod(sd_alphas_cumprod(), torch.tensor([300, 700]), like=x)
    pag = PagPass(PAG)
    want = pag.guide_with(*x0s[:1], x, *x0s[1:])
    got = pag.guide_with(*(space.from_x0(kind, x, p) for p in x0s[:1]), x,
                         *(space.from_x0(kind, x, p) for p in x0s[1:]), space=space, prediction=kind)
    assert torch.allclose(space.to_x0(kind, x, got), want, atol=1e-4)
    with pytest.raises(ValueError, match="NoiseSpace"):
        pag.guide_with(x0s[0], x, x0s[1], x0s[2], prediction=kind)


# ---- combinations --------------------------------------------------------------------------------
SEG2 = SegSettings(enabled=True, blur_sigma=2.0)


def pag_and_seg(unet):
    """A patch holding a PAG and a SEG (blur 2) guidance."""
    patch = SlothPatch(unet, SlothSettings(), seed=1)
    return patch, PagPass(PAG, patch), SegPass(SEG2, patch)


def test_pag_and_seg_add_their_terms_each_against_its_own_perturbed_prediction(sd15):
    x, t, c, u = conds(sd15)
    patch, pag, seg = pag_and_seg(sd15)
    with torch.no_grad(), patch:
        cfg, cond, out = plain_step(sd15, x, t, c, u)
        step = GuidedStep(x, out[1:], cond, lambda which, xi: sd15(xi, t, c if which == "cond" else u))
        both = seg.guide(pag.guide(cfg, step), step)
        with patch.extra_pass(pag):
            pag_pred = sd15(x, t, c)
        with patch.extra_pass(seg):
            seg_pred = sd15(x, t, c)
    want = cfg + PAG.scale * (cond - pag_pred) + SEG2.scale * (cond - seg_pred)
    assert torch.equal(both, want)  # the same calls and additions in the same order
    # the patch reports its guidances' own calls (the reference calls above are the test's, not theirs)
    assert pag.extra_calls == 1 and seg.extra_calls == 1 and patch.extra_calls == {"pag": 1, "seg": 1}


def test_perturbed_pass_runs_under_slothful_and_only_the_chosen_layer_is_replaced(sd15):
    x, t, c, u = conds(sd15)
    sloth = settings_from_dict({"slothful.enabled": True})
    _, _, plain_patch = run_step(sd15, PagSettings(enabled=True, scale=0.0), x, t, c, u, sloth=sloth)
    out, pag, patch = run_step(sd15, PAG, x, t, c, u, sloth=sloth)
    extra = patch.rewritten - plain_patch.rewritten
    # the perturbed pass is one more UNet call through the same patch: every Slothful layer once more
    # (once per call: the CFG call holds cond and uncond), plus PAG's own middle layer
    middle = "middle_block.1.transformer_blocks.0.attn1"
    assert middle not in plain_patch.rewritten and extra.pop(middle) == 1
    assert extra == plain_patch.rewritten
    assert torch.isfinite(out).all() and pag.extra_calls == 1


def test_the_patch_is_undone_after_an_exception_in_the_perturbed_pass(sd15):
    from ldm.modules.attention import CrossAttention

    before = CrossAttention.forward
    x, t, c, u = conds(sd15)
    patch = SlothPatch(sd15, SlothSettings(), seed=1)
    pag = PagPass(PAG, patch)

    def fail(which, xi):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), patch:
        cfg, cond, out = plain_step(sd15, x, t, c, u)
        pag.guide(cfg, GuidedStep(x, out[1:], cond, fail))
    assert CrossAttention.forward is before and pag._rows is None and not patch.in_extra_pass


# ---- Show Sloth maps -----------------------------------------------------------------------------
def test_maps_keep_where_the_guidance_moved_the_prediction_at_first_middle_and_last_step(sd15):
    from PIL import Image

    from lib_sloth.maps import MapRecorder
    from lib_sloth import draw_maps

    x, t, c, u = conds(sd15, batch=2)
    recorder = MapRecorder(SlothSettings(), 1)
    moved = {}
    for step in range(5):
        patch = SlothPatch(sd15, SlothSettings(), seed=1, recorder=recorder)
        pag = PagPass(PAG, patch)
        with torch.no_grad(), patch:
            patch.set_step(step, 5)
            cfg, _, _ = plain_step(sd15, x, t, c, u)
            guided = guided_step(sd15, pag, x, t, c, u, batched=False)
        moved[step] = (guided - cfg)[0].abs().mean(dim=0)
    records = recorder.overlay_records("pag")
    assert [r.step for r in records] == [0, 2, 4]
    for r in records:
        assert torch.allclose(r.overlay.heat, moved[r.step], atol=1e-6) and r.overlay.heat.shape == x.shape[-2:]
        assert torch.equal(r.overlay.mask, r.overlay.heat > r.overlay.heat.mean())
    maps = draw_maps.render(recorder, Image.new("RGB", (24 * 8, 16 * 8)), "first pass")
    strip, = [m for m in maps if m.caption.startswith("Sloth PAG map")]
    assert strip.image.width == 3 * 24 * 8 + 2 * draw_maps.GAP and "scale 3, layers: middle" in strip.caption


def test_pag_and_seg_batched_into_one_call_each_perturb_their_own_rows(sd15):
    x, t, c, u = conds(sd15)
    patch, pag, seg = pag_and_seg(sd15)
    with torch.no_grad(), patch:
        with pag.perturbing([2]), seg.perturbing([3]):
            out = sd15(torch.cat([x] * 4), torch.cat([t] * 4), torch.cat([c, u, c, c]))
        with patch.extra_pass(pag):
            pag_alone = sd15(x, t, c)
        with patch.extra_pass(seg):
            seg_alone = sd15(x, t, c)
        plain4 = sd15(torch.cat([x] * 4), torch.cat([t] * 4), torch.cat([c, u, c, c]))
        floor = noise_floor((plain4[2:3], plain4[0:1]), (plain4[:1], sd15(x, t, c)))  # batch-shape rounding
    # the rows also go through the routed layers' gather/scatter and SDPA: BATCH_FACTOR (measured ~1.05)
    assert_within_noise(out[2:3], pag_alone, floor, BATCH_FACTOR, "PAG's row")
    assert_within_noise(out[3:4], seg_alone, floor, BATCH_FACTOR, "SEG's row")
    assert max_abs(pag_alone, seg_alone) > 1e3 * max(floor, 1e-7)
