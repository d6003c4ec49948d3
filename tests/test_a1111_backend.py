"""The A1111 adapter end to end, through the real Script, in the A1111 1.10.1 stand-in.

The stand-in (tests/standins/a1111, see its README) is written from the WebUI's API: the
CFGDenoiser's batch layout and call splitting, Sampler step counting (t_enc + 1 for img2img and
hires), k-diffusion (x0) and timestep (eps, DDIM) denoisers. The model is a real random-weight
ldm UNet inside a LatentDiffusion-like wrapper. Latents are captured at decode time.
"""

import pytest
import torch
from ldm.modules.attention import CrossAttention

from lib_sloth.webui.job import job_of, new_job
from lib_sloth.settings import SlothSettings, settings_from_dict
from a1111_jobs import make_job, start_webui
from lib_sloth.webui import a1111
from noise import SAG_FACTOR, assert_within_noise, max_abs, noise_floor, one_ulp_apart
from unets import sd15_unet, sdxl_like_unet

import standin  # the A1111 stand-in, on sys.path through a1111_jobs
import standin_sd_model
from modules import scripts, shared

CTX = 32
SAG = {"sag.enabled": True, "sag.scale": 1.0}


class CapturingBackend(a1111.A1111Backend):
    """The real adapter; keeps each pass object so tests can look at its clock and patch."""

    def __init__(self):
        self.passes = []

    def attach(self, p, settings, seed):
        sloth_pass = super().attach(p, settings, seed)
        if job_of(p).deferred is None:  # a deferred pass has no denoiser yet
            self.passes.append(p.sampler.model_wrap_cfg)
        return sloth_pass


class TakesVector(torch.nn.Module):
    """sgm's UNet takes the pooled vector y; ldm's SDXL-layout UNet has no input for it."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        return self.unet(x, timesteps, context)


def make_model(kind):
    if kind == "sdxl":
        unet = TakesVector(sdxl_like_unet(model_channels=64, context_dim=CTX))
        return standin_sd_model.TinyLatentDiffusion(unet, kind="sdxl", context_dim=CTX, tokens=8, adm_dim=16)
    return standin_sd_model.TinyLatentDiffusion(sd15_unet(context_dim=CTX), kind="sd1", context_dim=CTX, tokens=8)


@pytest.fixture(scope="module")
def webui():
    start_webui(make_model("sd1"))
    yield
    standin.reset()


@pytest.fixture
def backend(webui):
    captured = CapturingBackend()
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        runner.script("Sloth").backend = captured
    shared.opts.batch_cond_uncond = True
    return captured


@pytest.fixture
def sdxl(webui):
    previous = shared.sd_model
    standin.use_model(make_model("sdxl"))
    yield
    standin.use_model(previous)


def generate(data=None, enabled=True, *, sampler="Euler", steps=4, size=256, img2img=False, prompt="a cat",
             seed=1234, **kwargs):
    p = make_job(settings_from_dict(data or {}), enabled, img2img=img2img, size=size, steps=steps, sampler=sampler,
                 prompt=prompt, seed=seed, **kwargs)
    latents = []
    model = shared.sd_model
    decode = model.decode_first_stage

    def capture(z):
        latents.append(z.detach().clone())
        return decode(z)

    model.decode_first_stage = capture
    try:
        standin.run(p)
    finally:
        del model.decode_first_stage
    return torch.cat(latents), p


def generate_one_ulp_apart(data=None, **kwargs):
    """generate() with every model call's output moved by one rounding (tests/noise.py)."""
    model = shared.sd_model
    apply_model, g = model.apply_model, torch.Generator().manual_seed(0)
    model.apply_model = lambda x, t, cond: one_ulp_apart(apply_model(x, t, cond), g)
    try:
        return generate(data, **kwargs)
    finally:
        del model.apply_model


def test_disabled_and_neutral_are_bit_identical_to_no_extension(backend):
    plain, _ = generate(enabled=False)
    neutral, _ = generate({})
    assert torch.equal(plain, neutral) and backend.passes == []


@pytest.mark.parametrize("data", [{"slothful.enabled": True}, {"tile.enabled": True, "tile.tile_size": 16},
                                  {"nearsighted.enabled": True}, {"agentsd.enabled": True}, SAG])
def test_each_method_changes_the_image_and_is_undone_after_the_pass(backend, data):
    original = CrossAttention.forward
    plain, _ = generate(enabled=False, size=256)
    out, _ = generate(data, size=256)
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)
    assert CrossAttention.forward is original
    assert backend.passes and all(not d.sloth_pass.patch.installed for d in backend.passes)


def test_methods_combine_with_sag(backend):
    out, _ = generate({"slothful.enabled": True, **SAG})
    slothful, _ = generate({"slothful.enabled": True})
    assert torch.isfinite(out).all() and not torch.allclose(out, slothful, atol=1e-4)


def test_each_step_knows_its_step_and_the_pass_total(backend):
    generate({"slothful.enabled": True}, steps=5)
    clock = backend.passes[-1].sloth_pass.clock
    assert clock.total == 5 and clock.step == 5  # five callbacks seen


def test_second_order_sampler_calls_twice_but_counts_steps(backend):
    generate({"slothful.enabled": True}, steps=3, sampler="Heun")
    denoiser = backend.passes[-1]
    assert denoiser.step > 3  # more denoiser calls than steps
    assert denoiser.sloth_pass.clock.total == 3 and denoiser.sloth_pass.clock.step == 3


def test_hires_pass_has_its_own_total_and_size(backend):
    generate({"slothful.enabled": True}, steps=4, size=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=6,
             denoising_strength=0.5, hr_upscaler="Latent")
    first, second = backend.passes
    assert first.sloth_pass.clock.total == 4
    assert second.sloth_pass.clock.total == 6  # t_enc + 1 = the hires steps asked for
    assert second.sloth_pass.patch.rewritten  # ran at the hires size


def test_img2img_schedule_covers_the_steps_actually_run(backend):
    generate({"slothful.enabled": True}, steps=10, img2img=True, denoising_strength=0.5)
    clock = backend.passes[-1].sloth_pass.clock
    assert clock.total == 6 and clock.step == 6


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_sag_runs_one_extra_model_call_per_step_and_changes_the_image(backend, sampler):
    plain, _ = generate(enabled=False, sampler=sampler)
    calls_before = len(shared.sd_model.calls)
    generate(enabled=False, sampler=sampler)
    plain_calls = len(shared.sd_model.calls) - calls_before
    calls_before = len(shared.sd_model.calls)
    out, _ = generate(SAG, sampler=sampler)
    sag_calls = len(shared.sd_model.calls) - calls_before
    sag = backend.passes[-1].sloth_pass.patch.guidance("sag")
    assert sag.extra_calls == plain_calls  # one batched CFG call per step, one SAG call per step
    assert sag_calls == 2 * plain_calls and sag.recorded is None  # the map is not kept after a step
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)


def test_sag_call_state_lives_for_one_denoiser_call_only(backend):
    seen = []
    original = a1111.DenoiserCall.__init__

    def spy(self, *args):
        original(self, *args)
        seen.append(self)

    a1111.DenoiserCall.__init__ = spy
    try:
        generate(SAG, steps=3)
    finally:
        a1111.DenoiserCall.__init__ = original
    sloth_pass = backend.passes[-1].sloth_pass
    assert len(seen) == 3 and len({id(c) for c in seen}) == 3  # one per denoiser call
    assert seen[-1].uncond_cond is not None  # it really carried the uncond conds to the guidance
    assert sloth_pass._call is None  # cleared in finally: no latent or cond outlives its call
    assert not [k for k, v in vars(sloth_pass).items() if isinstance(v, torch.Tensor)]


def test_sag_scale_zero_is_bit_identical(backend):
    plain, _ = generate(enabled=False)
    out, _ = generate({"sag.enabled": True, "sag.scale": 0.0})
    assert torch.equal(plain, out)


def test_sag_batch_rows_use_their_own_maps(backend):
    both, p = generate(SAG, batch_size=2)
    seeds = p.all_seeds
    assert seeds[1] != seeds[0]
    alone, _ = generate(SAG, seed=seeds[1])
    plain_both, _ = generate(enabled=False, batch_size=2)
    plain_alone, _ = generate(enabled=False, seed=seeds[1])
    # noise floor: batch 2 vs batch 1 with the extension off, and how far SAG carries one rounding per call
    floor = noise_floor((plain_both[1], plain_alone[0]), (alone, generate_one_ulp_apart(SAG, seed=seeds[1])[0]))
    tol = assert_within_noise(both[1], alone[0], floor, SAG_FACTOR)
    assert max_abs(both[1], plain_both[1]) > 100 * tol  # SAG's effect: a row using the other's map would show


def test_sag_split_calls_match_one_batched_call(backend):
    batched, _ = generate(SAG, batch_size=2)
    shared.opts.batch_cond_uncond = False
    split, _ = generate(SAG, batch_size=2)
    plain_split, _ = generate(enabled=False, batch_size=2)
    shared.opts.batch_cond_uncond = True
    plain_batched, _ = generate(enabled=False, batch_size=2)
    # noise floor: split vs batched with the extension off, and how far SAG carries one rounding per call
    floor = noise_floor((plain_batched, plain_split), (batched, generate_one_ulp_apart(SAG, batch_size=2)[0]))
    tol = assert_within_noise(split, batched, floor, SAG_FACTOR)
    assert max_abs(batched, plain_batched) > 100 * tol  # SAG's effect: a map taken from the cond call would show


def test_sag_with_an_and_prompt_finds_the_uncond_rows(backend):
    plain, _ = generate(enabled=False, prompt="a cat AND a dog")
    out, _ = generate(SAG, prompt="a cat AND a dog")
    sag = backend.passes[-1].sloth_pass.patch.guidance("sag")
    assert sag.extra_calls == 4 and not torch.allclose(out, plain, atol=1e-4)


def test_sag_on_the_sdxl_layout(backend, sdxl):
    plain, _ = generate(enabled=False)
    out, _ = generate(SAG)
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)
    assert backend.passes[-1].sloth_pass.patch.extra_calls["sag"] == 4


def test_patch_is_gone_after_an_error_mid_sampling(backend):
    original = CrossAttention.forward
    model = shared.sd_model
    apply_model = model.apply_model
    calls = []

    def failing(x, t, cond):
        calls.append(1)
        if len(calls) == 3:
            assert CrossAttention.forward is not original  # inside the patched pass
            raise RuntimeError("boom")
        return apply_model(x, t, cond)

    model.apply_model = failing
    try:
        with pytest.raises(RuntimeError, match="boom"):
            generate({"slothful.enabled": True, **SAG})
    finally:
        del model.apply_model
    assert CrossAttention.forward is original
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_notes_made_while_sampling_reach_the_info_text(backend):
    import tomesd

    model = shared.sd_model
    tomesd.apply_patch(model, ratio=0.5)  # the WebUI's own token merging, applied around sampling
    try:
        _, p = generate({"agentsd.enabled": True})
    finally:
        tomesd.remove_patch(model)
    assert "AgentSD skipped" in p.extra_generation_params.get("Sloth notes", "")


def test_img2img_batches_share_one_sampler_without_nesting_the_wrappers(backend):
    out, p = generate({"slothful.enabled": True, **SAG}, img2img=True, denoising_strength=0.5, n_iter=2)
    first, second = backend.passes
    assert first is second  # the WebUI keeps one sampler (and CFG denoiser) for every batch of img2img
    denoiser = second
    assert denoiser.sloth_pass.patch.extra_calls["sag"] == denoiser.sloth_pass.clock.total  # one SAG call a step, not two
    assert list(denoiser.__dict__).count("forward") == 1
    assert torch.isfinite(out).all() and out.shape[0] == 2


def test_a1111_before_1_10_attaches_the_first_pass_at_its_first_denoiser_call(backend, monkeypatch):
    """1.7-1.9 have no process_before_every_sampling: the Script attaches from process_batch, where
    a txt2img sampler does not exist yet, and the cfg_denoiser callback finishes the job."""
    monkeypatch.delattr(scripts.Script, "process_before_every_sampling")
    monkeypatch.setattr(scripts.ScriptRunner, "process_before_every_sampling", lambda *a, **k: None)
    plain, _ = generate(enabled=False, n_iter=2)
    out, p = generate({"slothful.enabled": True}, n_iter=2)
    denoiser = p.sampler.model_wrap_cfg  # the second batch's: each batch attached to its own sampler
    assert denoiser.sloth_pass is not None and denoiser.sloth_pass.patch.rewritten
    assert "first denoiser call" in p.extra_generation_params.get("Sloth notes", "")
    assert not torch.allclose(out[0], plain[0], atol=1e-4) and not torch.allclose(out[1], plain[1], atol=1e-4)


def test_a_method_that_changes_no_layer_says_so_and_why_in_the_notes(backend, sdxl):
    # SDXL at 256 x 256: its shallowest attention level is 16 x 16, inside one tile of 32
    _, p = generate({"tile.enabled": True}, size=256)
    notes = p.extra_generation_params.get("Sloth notes", "")
    assert ("Near-sighted Tile is on but changed no layer of this 32x32 latent: every tiled level fits in one tile "
            "(largest 16x16, tile size 32)") in notes
    assert not backend.passes[-1].sloth_pass.patch.rewritten  # a run-time fact, not a guess
    _, p = generate({"tile.enabled": True, "tile.tile_size": 16}, size=384)  # 24 x 24: 2 x 2 tiles
    assert backend.passes[-1].sloth_pass.patch.rewritten
    assert "changed no layer" not in p.extra_generation_params.get("Sloth notes", "")


def test_slothful_whose_strength_never_exceeds_1_after_decay_says_so(backend):
    far_peak = {"slothful.enabled": True, "slothful.peak_time": 0.5, "slothful.time_decay": 4.0,
                "slothful.input.slothful": 50.0, "slothful.output.slothful": 50.0}
    _, p = generate(far_peak, steps=2)  # progress 0 and 1: 50 * exp(-4) = 0.92 at both steps
    notes = p.extra_generation_params.get("Sloth notes", "")
    assert "Slothful Attention is on but changed no layer of this 32x32 latent: its strength after time and depth " \
           "decay stayed at or below 1 (at most 0.916)" in notes
    assert not backend.passes[-1].sloth_pass.patch.rewritten
    _, p = generate(far_peak, steps=3)  # progress 0.5 is the peak
    assert backend.passes[-1].sloth_pass.patch.rewritten and "changed no layer" not in str(p.extra_generation_params)
