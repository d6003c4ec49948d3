"""The A1111 adapter against WebUI behaviour the first stand-in left out (issue 10, runtime items).

Each test names the real file (AUTOMATIC1111/stable-diffusion-webui v1.10.1 unless said otherwise)
and the function it mirrors; where the stand-in lacked that part it was extended from the same
source (see tests/standins/a1111/README.md).
"""
import copy

import pytest
import torch

from lib_sloth.patch import SlothPatch
from lib_sloth.settings import settings_from_dict
from noise import assert_near_truth, float64_copy, max_abs, run_float64
from test_a1111_backend import backend, generate, webui  # noqa: F401  (fixtures)
from unets import sd15_unet, unet_inputs

from modules import scripts  # noqa: E402  (the stand-in, on sys.path through test_a1111_backend)


# ---------------------------------------------------------------------------------------------
# Item 10: HyperTile's forward is noted only when HyperTile is on for the job
# ---------------------------------------------------------------------------------------------
class HypertileParams:
    enabled = False


def hook_like_hypertile(unet, enable):
    """Mirrors extensions-builtin/hypertile/hypertile.py `hypertile_hook_model`: the first enabled call
    wraps each listed attn1 with an instance `forward` and keeps `__webui_hypertile_params` on it;
    every later call (once per job, enabled or not) only sets `params.enabled`. The wrapper calls the
    captured forward unchanged while disabled (`self_attn_forward`); tiling itself is left out."""
    layers = getattr(unet, "__webui_hypertile_layers", None)
    if layers is None:
        if not enable:
            return
        layers = []
        for name, module in unet.named_modules():
            if name.endswith("attn1"):
                params = HypertileParams()
                params.forward = module.forward
                setattr(module, "__webui_hypertile_params", params)

                def wrapper(*args, params=params, **kwargs):
                    return params.forward(*args, **kwargs)

                module.forward = wrapper
                layers.append(module)
        setattr(unet, "__webui_hypertile_layers", layers)
    for module in layers:
        getattr(module, "__webui_hypertile_params").enabled = enable


def test_hypertile_is_noted_only_for_jobs_that_use_it():
    unet = sd15_unet(context_dim=64)
    x, t, c = unet_inputs(unet, 1, 16, 16)
    settings = settings_from_dict({"tile.enabled": True, "tile.tile_size": 16})

    def job(hypertile):
        hook_like_hypertile(unet, hypertile)
        with SlothPatch(unet, settings) as patch:
            patch.set_step(0, 4)
            unet(x, t, c)
        return [n for n in patch.notes if "own forward" in n]

    assert job(False) == []  # never used: nothing installed, nothing to say
    assert job(True)  # on for this job: said
    assert job(False) == []  # installed for good but off for this job: not said
    assert job(True)


# ---------------------------------------------------------------------------------------------
# Item 11: A1111 1.7-1.9 attach the hires pass at before_hr, with no deferred first call
# ---------------------------------------------------------------------------------------------
def test_a1111_before_1_10_patches_every_call_of_the_hires_pass(backend, monkeypatch):  # noqa: F811
    """A1111 1.7-1.9 `modules/processing.py` `StableDiffusionProcessingTxt2Img.sample_hr_pass`:
    `self.sampler = sd_samplers.create_sampler(...)` runs before `self.scripts.before_hr(self)`,
    and there is no `process_before_every_sampling` (added in 1.10)."""
    monkeypatch.delattr(scripts.Script, "process_before_every_sampling")
    monkeypatch.setattr(scripts.ScriptRunner, "process_before_every_sampling", lambda *a, **k: None)
    generate({"slothful.enabled": True}, steps=4, size=64, enable_hr=True, hr_scale=2.0,
             hr_second_pass_steps=5, denoising_strength=0.5, hr_upscaler="Latent")
    hires = backend.passes[-1]
    assert hires.sloth_pass.clock.total == 5
    calls = hires.step  # the CFG denoiser counts its calls
    assert calls == 5 and max(hires.sloth_pass.patch.rewritten.values()) == calls


# ---------------------------------------------------------------------------------------------
# Item 5: the step clock follows every sampler's real progress, once per pass
# ---------------------------------------------------------------------------------------------
LIST_SAMPLERS = ["DPM++ 2M", "Euler a", "Euler", "Heun", "Restart"]


def clock_readings(monkeypatch, sampler, steps, **kwargs):
    from lib_sloth.webui import clock as clock_module

    seen = []
    now = clock_module.StepClock.now

    def spy(self, sigma=None):
        step, total = now(self, sigma)
        seen.append((step, total, None if sigma is None else float(sigma.max())))
        return step, total

    monkeypatch.setattr(clock_module.StepClock, "now", spy)
    generate({"slothful.enabled": True}, sampler=sampler, steps=steps, size=64, **kwargs)
    return seen


@pytest.mark.parametrize("sampler", LIST_SAMPLERS + ["DDIM"])
def test_step_runs_from_first_to_last_step_once(backend, monkeypatch, sampler):  # noqa: F811
    """k-diffusion samplers call back once per step of their `sigmas` (k_diffusion/sampling.py);
    Restart (`modules/sd_samplers_extra.py` `restart_sampler`, 20+ steps) restarts from sigma 2
    and counts those steps too, re-spacing its main schedule so the total stays `steps`; DDIM
    (`modules/sd_samplers_timesteps_impl.py` `ddim`) calls the model len(timesteps) - 1 times, one
    fewer than `launch_sampling` announces, so counting its callbacks never reached the last step."""
    seen = clock_readings(monkeypatch, sampler, 20)
    steps = [s for s, _, _ in seen]
    assert {t for _, t, _ in seen} == {20}
    assert steps[0] == 0 and steps[-1] == 19
    assert all(a <= b for a, b in zip(steps, steps[1:]))
    if sampler in LIST_SAMPLERS:  # exact step counting: every step is seen
        assert sorted(set(steps)) == list(range(20))


@pytest.mark.parametrize("sampler, steps", [("Restart", 20), ("Restart", 36), ("Restart", 12), ("Heun", 6)])
def test_both_denoiser_calls_of_a_second_order_step_see_that_step(backend, monkeypatch, sampler, steps):  # noqa: F811
    """A1111 1.10.1 `modules/sd_samplers_extra.py` `restart_sampler`: steps = len(sigmas) - 1; from 20
    steps the main schedule is re-spaced over steps - restart_steps x restart_times Karras steps and
    restart_times restart segments of restart_steps Heun steps follow the main step nearest sigma 0.1
    (9 x 1; from 36 steps steps // 4 x 2): `steps` callbacks in all, as many as announced. Its
    `heun_step` calls the model, then the callback, then the model again for the correction unless
    new_sigma is 0 (the last step): 2 x steps - 1 denoiser calls. k-diffusion's `sample_heun` (the
    WebUI's Heun) calls in the same order. The correction belongs to the step it corrects."""
    seen = clock_readings(monkeypatch, sampler, steps)
    assert {t for _, t, _ in seen} == {steps}
    assert [s for s, _, _ in seen] == [i for i in range(steps) for _ in (0, 1)][:-1]  # 0 0 1 1 ... last once


@pytest.mark.parametrize("sampler", ["DPM fast", "DPM adaptive"])
def test_samplers_without_a_step_list_are_timed_by_their_noise_level(backend, monkeypatch, sampler):  # noqa: F811
    """k-diffusion `sample_dpm_fast(model, x, sigma_min, sigma_max, n)` makes n // 3 + 1 callbacks
    for n = steps model calls; `sample_dpm_adaptive(model, x, sigma_min, sigma_max)` makes one per
    attempted step, as many as its error control needs. A1111's `KDiffusionSampler.sample` gives them
    the model's sigma_min / sigma_max instead of `sigmas`. The step must follow the noise level: the
    fraction of the pass's log-sigma range already covered, on the announced steps."""
    import math
    from modules import shared

    seen = clock_readings(monkeypatch, sampler, 20)
    acp = shared.sd_model.alphas_cumprod
    sigma_min = float(((1 - acp[0]) / acp[0]).sqrt())  # k-diffusion's CompVisDenoiser.sigma_min
    steps = [s for s, _, _ in seen]
    assert steps[0] == 0 and all(a <= b for a, b in zip(steps, steps[1:]))
    first, low = math.log(seen[0][2]), math.log(sigma_min)
    for step, total, sigma in seen:
        covered = (first - math.log(sigma)) / (first - low)
        assert abs(step - covered * (total - 1)) <= 1.0
    assert steps[-1] >= 15  # the end of the pass is reached by noise level, not by a count


def test_img2img_ddim_ends_at_its_last_step(backend, monkeypatch):  # noqa: F811
    """`CompVisSampler.sample_img2img` samples `timesteps[:t_enc]` and announces t_enc + 1 steps."""
    seen = clock_readings(monkeypatch, "DDIM", 10, img2img=True, denoising_strength=0.6)
    steps = [s for s, _, _ in seen]
    total = seen[0][1]
    assert total == 7 and steps[0] == 0 and steps[-1] == total - 1
    assert all(a <= b for a, b in zip(steps, steps[1:]))


# ---------------------------------------------------------------------------------------------
# Item 4: hypernetworks reach every rewritten path, SAG's recorded layer included
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def hypernetwork_loaded(webui):  # noqa: F811
    from modules import shared
    from modules.hypernetworks import hypernetwork

    unet = shared.sd_model.model.diffusion_model
    widths = sorted({m.to_k.in_features for m in unet.modules() if hasattr(m, "to_k")})
    hypernetwork.load_hypernetworks([hypernetwork.Hypernetwork("hn", widths, seed=3)], [1.0])
    yield shared.loaded_hypernetworks
    shared.loaded_hypernetworks.clear()


@pytest.fixture
def sdp_forward(webui):  # noqa: F811
    """A1111 installs its 'sdp' forward on the attention class (sd_hijack_optimizations.py)."""
    from ldm.modules.attention import CrossAttention
    from modules import sd_hijack_optimizations

    saved = CrossAttention.__dict__["forward"]
    CrossAttention.forward = sd_hijack_optimizations.scaled_dot_product_attention_forward
    yield
    CrossAttention.forward = saved


def float64_hypernetworks(networks):
    """float64 copies of loaded hypernetworks, for a float64 truth (tests/noise.py)."""
    copies = copy.deepcopy(list(networks))
    for network in copies:
        for pair in network.layers.values():
            for module in pair:
                module.double()
    return copies


def middle_attn1():
    from modules import shared

    return shared.sd_model.model.diffusion_model.middle_block[1].transformer_blocks[0].attn1


def test_sag_records_the_layer_as_the_webui_computes_it_with_a_hypernetwork(hypernetwork_loaded, sdp_forward):
    """`scaled_dot_product_attention_forward` (sd_hijack_optimizations.py) computes K and V from
    `hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)`; SAG's recorded layer
    (a full self-attention with an explicit map) must give the same output."""
    from lib_sloth.sag_capture import attention_with_map
    from lib_sloth.webui.a1111 import _hypernetwork_source

    layer = middle_attn1()
    x = torch.randn(2, 12, layer.to_q.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        webui_out = layer(x)
        out, _ = attention_with_map(layer, x, *_hypernetwork_source()(x), [1])
        plain, _ = attention_with_map(layer, x, x, x, [1])
    # the float64 truth: the WebUI's own forward on float64 copies of the layer and the hypernetworks
    saved = list(hypernetwork_loaded)
    hypernetwork_loaded[:] = float64_hypernetworks(saved)
    try:
        truth = run_float64(float64_copy(layer), x.double())
    finally:
        hypernetwork_loaded[:] = saved
    # the explicit-map kernel rounds differently from SDPA but not more: factor 2
    tol = assert_near_truth(layer.to_out(out), truth, webui_out, 2.0, "SAG's recorded layer")
    assert not torch.allclose(layer.to_out(plain), webui_out, atol=1e-3)  # the hypernetwork matters here
    assert max_abs(layer.to_out(plain), webui_out) > 100 * tol  # far above the tolerance


def test_pags_perturbed_layer_is_to_out_of_to_v_of_the_hypernetworks_context(hypernetwork_loaded):
    """PAG's perturbed layer returns its values: V computed, as A1111 computes it, from the context the
    loaded hypernetworks give; to_out(to_v(v_in)) exactly."""
    from lib_sloth.pag import PagPass, PagSettings
    from lib_sloth.perturbed import PerturbedPlan
    from lib_sloth.webui.a1111 import _hypernetwork_source

    layer = middle_attn1()
    x = torch.randn(2, 12, layer.to_q.in_features, generator=torch.Generator().manual_seed(0))
    plan = PerturbedPlan((((0, 1), PagPass(PagSettings(enabled=True))),), None, (3, 4))
    k_in, v_in = _hypernetwork_source()(x)
    with torch.no_grad():
        out = plan.run(layer, x, k_in, v_in, False)
        assert torch.equal(out, layer.to_out(layer.to_v(v_in)))
        assert not torch.allclose(out, layer.to_out(layer.to_v(x)), atol=1e-3)  # the hypernetwork matters here


def input_attn1():
    from modules import shared

    return shared.sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1


METHODS = {"tile": {"tile.enabled": True, "tile.tile_size": 16}, "slothful": {"slothful.enabled": True},
           "nearsighted": {"nearsighted.enabled": True}, "agentsd": {"agentsd.enabled": True}}


def planned_runner(name):
    """fn(layer, x, source=None) -> the planned layer output, K/V computed through `source` (None: x)."""
    from lib_sloth.layer_call import LayerCall, TokenGrid
    from lib_sloth.methods import plan_layer

    step = 0 if name == "agentsd" else 4  # each method's strongest point of a 10-step schedule
    plan = plan_layer(settings_from_dict(METHODS[name]), LayerCall("input", TokenGrid(32, 32, 0), 2, step, 10, 7))
    assert plan is not None

    def run(layer, x, source=None):
        k_in, v_in = (x, x) if source is None else source(x)
        return plan.run(layer, x, k_in, v_in, False)

    run.plan = plan
    return run


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_rewrite_computes_k_and_v_through_the_hypernetwork(hypernetwork_loaded, name):
    """A hypernetwork maps each token alone (a residual MLP per context width), so where a rewrite
    only gathers tokens (Near-sighted Tile: tiles and a strided global pick) its K/V must equal K/V
    from layers whose to_k / to_v start with the hypernetwork; where it averages them (Slothful
    pooling), the pooled tokens must be the hypernetwork's outputs, as A1111 pools nothing before
    apply_hypernetworks. Every rewrite changes with the hypernetwork, and a hypernetwork with no
    module for the layer's width changes nothing, bit for bit."""
    from lib_sloth.attention import attend
    from lib_sloth.webui.a1111 import _hypernetwork_source
    from modules.hypernetworks import hypernetwork

    layer, runner = input_attn1(), planned_runner(name)
    x = torch.randn(2, 32 * 32, layer.to_q.in_features, generator=torch.Generator().manual_seed(1))

    def hn(t):
        return hypernetwork.apply_hypernetworks(hypernetwork_loaded, t)

    def hn64(t):
        return hypernetwork.apply_hypernetworks(networks64, t)

    layer64, networks64 = float64_copy(layer), float64_hypernetworks(hypernetwork_loaded)
    with torch.no_grad():
        got = runner(layer, x, _hypernetwork_source())
        plain = runner(layer, x)
        assert not torch.allclose(got, plain, atol=1e-4)
        if name == "tile":
            class Composed(torch.nn.Module):  # the hypernetwork folded into to_k / to_v
                def __init__(self, layer, hn):
                    super().__init__()
                    self.layer, self.hn = layer, hn
                    self.heads, self.to_q, self.to_out = layer.heads, layer.to_q, layer.to_out

                def to_k(self, t):
                    return self.layer.to_k(self.hn(t)[0])

                def to_v(self, t):
                    return self.layer.to_v(self.hn(t)[1])

            truth = run_float64(runner, Composed(layer64, hn64), x.double())
            # the hypernetwork on all tokens once vs per gathered tile: other GEMM shapes, same math: factor 2
            tol = assert_near_truth(got, truth, runner(Composed(layer, hn), x), 2.0, "tile")
            assert max_abs(got, plain) > 100 * tol  # the hypernetwork's effect is far above it
        if name == "slothful":
            from lib_sloth.slothful import reduce_tokens

            def reference(layer, hn, x):
                k_in, v_in = hn(x)
                pooling = runner.plan.pooling
                k = layer.to_k(reduce_tokens(k_in, 32, 32, pooling)[0])
                v = layer.to_v(reduce_tokens(v_in, 32, 32, pooling)[1])
                return layer.to_out(attend(layer.to_q(x), k, v, layer.heads))

            truth = run_float64(reference, layer64, hn64, x.double())
            # the same pooling and attention, composed by hand: no more rounding than the rewrite, factor 2
            tol = assert_near_truth(got, truth, reference(layer, hn, x), 2.0, "slothful")
            assert max_abs(got, plain) > 100 * tol  # the hypernetwork's effect is far above it
        other_width = [hypernetwork.Hypernetwork("other", [layer.to_k.in_features + 1])]
        untouched = runner(layer, x, lambda t: hypernetwork.apply_hypernetworks(other_width, t))
        assert torch.equal(untouched, runner(layer, x))


def test_the_adapter_gives_the_patch_the_webui_hypernetworks(backend, hypernetwork_loaded):  # noqa: F811
    out, _ = generate({"slothful.enabled": True, **{"sag.enabled": True, "sag.scale": 1.0}}, size=128)
    pass_ = backend.passes[-1].sloth_pass
    assert pass_.patch.kv_source is not None
    from modules import shared

    shared.loaded_hypernetworks.clear()
    plain, _ = generate({"slothful.enabled": True, **{"sag.enabled": True, "sag.scale": 1.0}}, size=128)
    assert not torch.allclose(out, plain, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Item 8: rewritten attention follows the WebUI's precision choice; upcast_attention forces fp32
# ---------------------------------------------------------------------------------------------
def planned_upcasts(monkeypatch, blocks=False):
    """The upcast each planned self-attention call would run with (with its block, when `blocks`)."""
    from lib_sloth.patch import SlothPatch

    seen = []
    plan_for = SlothPatch._plan_for

    def spy(self, module, x, args, kwargs):
        info = self.index.get(module) if self.index is not None else None
        if info is not None:  # a self-attention layer (the class forward also serves cross-attention)
            upcast = self.wants_upcast(module)
            seen.append((info.block, upcast) if blocks else upcast)
        return plan_for(self, module, x, args, kwargs)

    monkeypatch.setattr(SlothPatch, "_plan_for", spy)
    return seen


@pytest.mark.parametrize("upcast_attn, forced, expected", [(False, False, False), (True, False, True),
                                                           (False, True, True)])
def test_a1111_upcast_option_reaches_every_rewritten_layer(backend, monkeypatch, upcast_attn, forced, expected):  # noqa: F811
    """modules/sd_hijack_optimizations.py: every attention forward casts q, k, v to float32 when
    `shared.opts.upcast_attn` ("Upcast cross attention layer to float32", shared_options.py)."""
    from modules import shared

    seen = planned_upcasts(monkeypatch)
    shared.opts.set("upcast_attn", upcast_attn)
    try:
        generate({"slothful.enabled": True, "upcast_attention": forced}, size=64, steps=2)
    finally:
        shared.opts.set("upcast_attn", False)
    assert seen and set(seen) == {expected}


def test_ldm_patched_layers_keep_their_own_attn_precision(monkeypatch):
    """ldm_patched/ldm/modules/attention.py (reForge): each CrossAttention keeps `attn_precision`
    (a dtype or None) and attention_basic / attention_split compute q·k in float32 when it is
    torch.float32; without a front-end choice the patch follows each layer."""
    from lib_sloth.patch import SlothPatch

    unet = sd15_unet(context_dim=64)
    fp32_layer = unet.middle_block[1].transformer_blocks[0].attn1
    fp32_layer.attn_precision = torch.float32
    x, t, c = unet_inputs(unet, 1, 16, 16)
    seen = planned_upcasts(monkeypatch, blocks=True)
    try:
        with SlothPatch(unet, settings_from_dict({"slothful.enabled": True, "slothful.keep_middle": False})) as patch:
            patch.set_step(4, 10)
            unet(x, t, c)
    finally:
        del fp32_layer.attn_precision
    assert ("middle", True) in seen and ("input", False) in seen and ("input", True) not in seen


# ---------------------------------------------------------------------------------------------
# Item 9: inpainting with DDIM: SAG re-noises from the x the model saw (the blended one)
# ---------------------------------------------------------------------------------------------
def test_sag_uses_the_blended_latent_the_model_saw_when_inpainting_with_ddim(backend, monkeypatch):  # noqa: F811
    """sd_samplers_cfg_denoiser.py `CFGDenoiser.forward`: with `mask_before_denoising` (set by
    `CFGDenoiserTimesteps`, sd_samplers_timesteps.py) and a mask, x is replaced by
    `apply_blend(x)` = x * nmask + init_latent * mask before x_in is built. processing.py
    `StableDiffusionProcessingImg2Img.init` sets p.mask = 1 - latent mask and p.nmask = latent mask."""
    from lib_sloth.sag import SagPass
    from modules import processing

    init = processing.StableDiffusionProcessingImg2Img.init

    def init_with_mask(self, *args):
        init(self, *args)
        keep = torch.zeros(1, 1, 8, 8)
        keep[..., :, :4] = 1.0  # the left half is kept from the image
        self.mask, self.nmask = keep, 1.0 - keep

    monkeypatch.setattr(processing.StableDiffusionProcessingImg2Img, "init", init_with_mask)
    guided, seen = [], []
    guide = SagPass.guide

    def spy(self, cfg, step):
        guided.append(step.x.clone())
        return guide(self, cfg, step)

    monkeypatch.setattr(SagPass, "guide", spy)
    from modules import shared

    apply_model = shared.sd_model.apply_model

    def record(x, t, cond):
        seen.append(x.clone())
        return apply_model(x, t, cond)

    monkeypatch.setattr(shared.sd_model, "apply_model", record)
    generate({"sag.enabled": True, "sag.scale": 1.0}, sampler="DDIM", steps=6, size=64, img2img=True,
             denoising_strength=0.8)
    assert guided
    # each step: the CFG call (cond + uncond rows), then SAG's extra call; the guided x must be the
    # uncond rows of the CFG call, i.e. the blended latent
    cfg_calls = [x for x in seen if x.shape[0] == 2]
    assert len(cfg_calls) == len(guided)
    for x, model_saw in zip(guided, cfg_calls):
        assert torch.equal(x, model_saw[-1:])
    init_latent = backend.passes[-1].init_latent
    assert torch.equal(guided[0][..., :4], init_latent[..., :4])  # the kept half is the image itself


# ---------------------------------------------------------------------------------------------
# Item 3: edit models (InstructPix2Pix): SAG is skipped with a note, no map is computed
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def edit_model(webui):  # noqa: F811
    import standin
    import standin_sd_model
    from modules import shared

    previous = shared.sd_model
    standin.use_model(standin_sd_model.make_edit_model())
    yield
    standin.use_model(previous)


def test_edit_models_skip_sag_without_computing_a_map(backend, edit_model, monkeypatch):  # noqa: F811
    """sd_samplers_cfg_denoiser.py `CFGDenoiser.forward`: `is_edit_model` (cond_stage_key "edit",
    image_cfg_scale set and not 1) lays out cond + uncond + uncond rows (the last with a zero image)
    and combines through `combine_denoised_for_edit_model`, never `combine_denoised`."""
    from lib_sloth import sag_capture

    maps = []
    capture = sag_capture.attention_with_map
    monkeypatch.setattr(sag_capture, "attention_with_map", lambda *a, **k: maps.append(1) or capture(*a, **k))
    import lib_sloth.sag as sag_module
    monkeypatch.setattr(sag_module, "attention_with_map", sag_capture.attention_with_map)
    plain, _ = generate(enabled=False, img2img=True, denoising_strength=0.6, size=64, image_cfg_scale=1.5)
    out, p = generate({"sag.enabled": True, "sag.scale": 1.0}, img2img=True, denoising_strength=0.6, size=64,
                      image_cfg_scale=1.5)
    assert not maps and backend.passes[-1].sloth_pass.patch.extra_calls["sag"] == 0
    assert "edit models" in p.extra_generation_params.get("Sloth notes", "")
    assert torch.equal(out, plain)
    # Image CFG scale 1 is an ordinary layout (the WebUI says so too): SAG runs
    generate({"sag.enabled": True, "sag.scale": 1.0}, img2img=True, denoising_strength=0.6, size=64,
             image_cfg_scale=1.0)
    assert maps and backend.passes[-1].sloth_pass.patch.extra_calls["sag"] > 0


# ---------------------------------------------------------------------------------------------
# Item 2: ControlNet reference units: attn1(x, context=x) is self-attention, a bank is not ours
# ---------------------------------------------------------------------------------------------
class ReferenceBlockHook:
    """Mirrors sd-webui-controlnet scripts/hook.py `hacked_basic_transformer_inner_forward`, as
    installed on every BasicTransformerBlock by a reference unit: attn1 is always called with an
    explicit context, `self_attention_context = x_norm1` itself, or in the Read phase with a filled
    bank `torch.cat([x_norm1] + bank, dim=1)`; attn2 and ff follow as in ldm."""

    def __init__(self, unet):
        self.blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
        self.mode = "none"  # "write" fills the bank, "read" uses it

    def __enter__(self):
        for block in self.blocks:
            block.bank = []
            block._forward = self._hooked(block)
        return self

    def __exit__(self, *exc):
        for block in self.blocks:
            del block._forward, block.bank

    def _hooked(self, block):
        def forward(x, context=None):
            x_norm1 = block.norm1(x)
            self_attention_context = x_norm1
            if self.mode == "write":
                block.bank.append(x_norm1.detach().clone())
            if self.mode == "read" and block.bank:
                self_attention_context = torch.cat([self_attention_context] + block.bank, dim=1)
            x = block.attn1(x_norm1, context=self_attention_context) + x
            x = block.attn2(block.norm2(x), context=context) + x
            return block.ff(block.norm3(x)) + x

        return forward


def test_controlnet_reference_self_context_is_rewritten_and_a_bank_is_left_alone():
    unet = sd15_unet(context_dim=64)
    x, t, c = unet_inputs(unet, 1, 16, 16)
    settings = settings_from_dict({"slothful.enabled": True, "slothful.keep_middle": False})

    def run(hook_mode=None):
        with SlothPatch(unet, settings) as patch:
            patch.set_step(4, 10)
            if hook_mode is None:
                out = unet(x, t, c)
            else:
                with ReferenceBlockHook(unet) as hook:
                    hook.mode = hook_mode
                    out = unet(x, t, c)
                    if hook_mode == "read":  # a bank written by the reference image's pass, then read
                        hook.mode = "write"
                        unet(x, t, c)
                        hook.mode = "read"
                        patch.rewritten.clear()
                        out = unet(x, t, c)
        return out, patch

    with torch.no_grad():
        plain, plain_patch = run()
        hooked, hooked_patch = run("none")
        read, read_patch = run("read")
    assert torch.equal(hooked, plain)  # context is x: the same rewrite on every layer
    assert hooked_patch.rewritten == plain_patch.rewritten and plain_patch.rewritten
    assert not read_patch.rewritten  # every layer got x + bank: not self-attention any more
    assert sum("ControlNet reference" in n for n in read_patch.notes) == 1
    assert not any("ControlNet reference" in n for n in hooked_patch.notes)


# ---------------------------------------------------------------------------------------------
# Item 1: the refiner switch builds a new UNet mid-pass: it is patched too, same settings and clock
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def refiner(webui, monkeypatch):  # noqa: F811
    """The user ticks "Refiner" with a checkpoint (processing_scripts/refiner.py `setup`); the
    checkpoint is another model, as SDXL base -> refiner always is (sd_models.reload_model_weights
    loads a new model and re-applies the attention optimisation to the attention classes)."""
    import standin
    from modules import sd_models, shared
    from test_a1111_backend import make_model

    base = shared.sd_model
    sd_models.register_checkpoint("base", base)
    refiner_model = make_model("sd1")
    refiner_model.model.diffusion_model.load_state_dict(
        {k: v + 0.05 * torch.randn_like(v) for k, v in base.model.diffusion_model.state_dict().items()})
    sd_models.register_checkpoint("refiner", refiner_model)
    refiner_model.decode_first_stage = lambda z: base.decode_first_stage(z)  # generate() captures there

    def setup(self, p, *args):
        p.refiner_checkpoint, p.refiner_switch_at = "refiner", 0.5

    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):  # the loaded script's class
        monkeypatch.setattr(type(runner.script("Refiner")), "setup", setup)
    yield base, refiner_model
    standin.use_model(base)
    sd_models.checkpoints_list.clear()


def test_refiner_unet_is_patched_with_the_same_settings_and_clock(backend, refiner):  # noqa: F811
    """sd_samplers_cfg_denoiser.py `CFGDenoiser.forward` calls sd_samplers_common.py `apply_refiner`
    first: past `refiner_switch_at` it runs `sd_models.reload_model_weights(info=...)`,
    `p.setup_conds()` and `cfg_denoiser.update_inner_model()`; the same sampler (and step
    callback) keeps going on the new model."""
    from ldm.modules.attention import CrossAttention
    from modules import sd_models

    base, refiner_model = refiner
    class_forward = CrossAttention.__dict__["forward"]
    out, p = generate({"slothful.enabled": True, "slothful.keep_middle": False, "sag.enabled": True,
                       "sag.scale": 1.0}, steps=6, size=64, sampler="Euler")
    sloth_pass = backend.passes[-1].sloth_pass
    assert p.extra_generation_params.get("Refiner") == "refiner"  # the WebUI did switch
    assert sloth_pass.patch.unet is refiner_model.model.diffusion_model
    assert "Refiner: its UNet was patched too" in p.extra_generation_params.get("Sloth notes", "")
    assert "was replaced while patched" not in p.extra_generation_params.get("Sloth notes", "")
    refiner_layers = {n for n in sloth_pass.patch.rewritten}
    assert refiner_layers  # the refiner's layers were rewritten after the switch
    assert sloth_pass.patch.extra_calls["sag"] == 6  # one SAG call per step, on both models
    assert sloth_pass.clock.total == 6 and sloth_pass.clock.step == 6  # one clock over the whole pass
    # nothing left behind on either model, and the class forward is the WebUI's own again
    assert CrossAttention.__dict__["forward"] is class_forward is sd_models.OPTIMISED_FORWARD
    for model in (base, refiner_model):
        unet = model.model.diffusion_model
        assert not unet._forward_pre_hooks
        assert not any("forward" in m.__dict__ for m in unet.modules() if isinstance(m, CrossAttention))
    assert torch.isfinite(out).all()


def test_an_error_after_the_refiner_switch_leaves_neither_unet_patched(backend, refiner):  # noqa: F811
    """The refiner's UNet is patched mid-pass (retarget); an exception in its first sampled step must
    still undo everything on both UNets and give the class forward back."""
    from ldm.modules.attention import CrossAttention
    from modules import sd_models

    base, refiner_model = refiner
    class_forward = CrossAttention.__dict__["forward"]
    apply_model, calls = refiner_model.apply_model, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the refiner has been patched and has run once
            assert refiner_model.model.diffusion_model._forward_pre_hooks  # inside the patched pass
            raise RuntimeError("boom")
        return apply_model(*args, **kwargs)

    refiner_model.apply_model = failing
    try:
        with pytest.raises(RuntimeError, match="boom"):
            generate({"slothful.enabled": True, "sag.enabled": True, "sag.scale": 1.0}, steps=6, size=64,
                     sampler="Euler")
    finally:
        del refiner_model.apply_model
    assert len(calls) == 2
    assert CrossAttention.__dict__["forward"] is class_forward is sd_models.OPTIMISED_FORWARD
    for model in (base, refiner_model):
        unet = model.model.diffusion_model
        assert not any(m._forward_pre_hooks for m in unet.modules())  # incl. the block hooks
        assert not any("forward" in m.__dict__ for m in unet.modules() if isinstance(m, CrossAttention))


def test_a_refiner_switch_inside_a_hires_only_second_pass_is_followed(backend, refiner):  # noqa: F811
    """Hires fix with the refiner in the second pass only (option `hires_fix_refiner_pass`, default
    "second pass"): sd_samplers_common.py `apply_refiner` returns False throughout the first pass and
    switches in the middle of the hires pass, whose pass object must follow it (retarget)."""
    from ldm.modules.attention import CrossAttention
    from modules import sd_models

    base, refiner_model = refiner
    class_forward = CrossAttention.__dict__["forward"]
    layer = next(m for m in refiner_model.model.diffusion_model.modules() if isinstance(m, CrossAttention))
    sloth_installed = []
    hook = layer.register_forward_pre_hook(
        lambda m, args: sloth_installed.append(CrossAttention.__dict__["forward"] is not class_forward))
    try:
        out, p = generate({"slothful.enabled": True, "slothful.keep_middle": False}, steps=4, size=64,
                          enable_hr=True, hr_scale=2.0, hr_second_pass_steps=6, denoising_strength=0.5,
                          hr_upscaler="Latent")
    finally:
        hook.remove()
    first, hires = backend.passes[-2].sloth_pass, backend.passes[-1].sloth_pass
    assert p.extra_generation_params.get("Refiner") == "refiner" and "Hires refiner" not in p.extra_generation_params
    assert first.patch.unet is base.model.diffusion_model  # the first pass never saw the refiner
    assert hires.patch.unet is refiner_model.model.diffusion_model
    assert sloth_installed and all(sloth_installed)  # every refiner call of the hires pass went through Sloth
    assert hires.clock.total == 6 and hires.clock.step == 6  # one clock over the whole hires pass
    assert "Refiner: its UNet was patched too" in p.extra_generation_params.get("Sloth notes", "")
    assert CrossAttention.__dict__["forward"] is class_forward is sd_models.OPTIMISED_FORWARD
    for model in (base, refiner_model):
        unet = model.model.diffusion_model
        assert not any(m._forward_pre_hooks for m in unet.modules())
        assert not any("forward" in m.__dict__ for m in unet.modules() if isinstance(m, CrossAttention))
    assert torch.isfinite(out).all()
