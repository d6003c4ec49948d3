"""The Forge main adapter (lib_sloth.webui.forge_main) on ComfyUI 0.3.75 under Forge main's ``backend``
stand-ins. Run in its own process by tests/test_forge_main_backend.py (another ComfyUI is loaded in
the main test process); directly: ``pytest tests/forge_main_cases.py``.

The WebUI side is stood in below, mirroring Forge main @ dfdcbab6: ``modules/processing.py`` resets
``forge_objects`` from ``forge_objects_after_applying_lora`` and applies token merging before each
``process_before_every_sampling``; ``modules/sd_samplers_cfg_denoiser.py`` samples the hires pass with
``p.hr_cfg`` and NGMS with ``cond_scale = 1``; ``modules/sd_samplers_common.py`` ``launch_sampling``
/ ``callback_state`` give the step clock.
"""
from types import SimpleNamespace

import pytest
import torch

import forge_main_harness as fmh
from noise import SAG_FACTOR, assert_within_noise, max_abs, noise_floor, one_ulp_apart

fmh.setup()

from backend.diffusion_engine.base import ForgeDiffusionEngine  # noqa: E402  (stand-ins)
from backend.misc.tomesd import TomePatcher  # noqa: E402
from backend.nn.unet import CrossAttention  # noqa: E402
from backend.sampling import sampling_function  # noqa: E402

from lib_sloth.webui.job import job_of, new_job
from lib_sloth import infotext  # noqa: E402
from lib_sloth.settings import SlothSettings, settings_from_dict  # noqa: E402
from lib_sloth.webui import backend as sloth_backend  # noqa: E402
from lib_sloth.webui import hooks  # noqa: E402
from lib_sloth.webui.forge_main import ForgeMainBackend  # noqa: E402

STEPS = 3
SIZE = (32, 32)
SEED = 1234
METHODS = {
    "slothful": {"slothful": {"enabled": True, "peak_time": 0.0, "time_decay": 0.0, "keep_middle": False,
                              "input": {"slothful": 4.0, "depth_decay": 0.0},
                              "output": {"slothful": 4.0, "depth_decay": 0.0}}},
    "tile": {"tile": {"enabled": True, "tile_size": 16}},
    "nearsighted": {"nearsighted": {"enabled": True}},
    "agentsd": {"agentsd": {"enabled": True}},
    "sag": {"sag": {"enabled": True, "scale": 1.0}},
}


def S(*names):
    data = {}
    for name in names:
        data.update(METHODS[name])
    return settings_from_dict(data)


# ---- stand-ins of Forge main's WebUI glue --------------------------------------------------------
class Sampler:
    """``KDiffusionSampler`` as far as a pass uses it: a new one per pass; ``launch_sampling`` sets
    ``model_wrap_cfg.steps``; the loop calls ``callback_state`` once per step; each step is one
    ``CFGDenoiser.forward``: ``cond_scale = p.hr_cfg`` in the hires pass, 1 on NGMS steps."""

    def __init__(self):
        self.model_wrap_cfg = SimpleNamespace()

    def callback_state(self, d):
        pass

    def sample(self, p, x, steps, ngms_steps=()):
        unet = p.sd_model.forge_objects.unet  # read at sampling time, after every script hook
        self.model_wrap_cfg.steps = steps
        sigmas = fmh.karras_sigmas(unet, steps)
        x = x * sigmas[0]
        cond, uncond = fmh.to_cond_list(p.cond), fmh.to_cond_list(p.uncond)
        with torch.no_grad():
            for i in range(steps):
                cond_scale = p.hr_cfg if p.is_hr_pass else p.cfg_scale
                if i in ngms_steps:
                    cond_scale = 1.0
                sigma = sigmas[i].expand(x.shape[0]).clone()
                denoised = sampling_function.sampling_function_inner(unet.model, x, sigma, uncond, cond, cond_scale,
                                                                     unet.model_options, SEED)
                x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
                self.callback_state({"i": i})
        return x


def make_p(layout, patcher, batch=1, cfg_scale=5.0, kind=None, params=None):
    cond, uncond = fmh.make_text_conds(layout, batch=batch, seed=1)
    sd_model = ForgeDiffusionEngine(patcher, kind or ("sd1" if layout == "sd15" else "sdxl"))
    seeds = [SEED + i for i in range(batch)]
    return SimpleNamespace(sd_model=sd_model, sampler=None, steps=STEPS, cfg_scale=cfg_scale, hr_cfg=1.0,
                           is_hr_pass=False, all_seeds=seeds, seeds=list(seeds), token_merging_ratio=0.0,
                           extra_generation_params=dict(params or {}), cond=cond, uncond=uncond)


def start_pass(p, settings=None, hr=False):
    """What processing.py does before sampling: new sampler, reset, token merging, the script hook."""
    p.is_hr_pass = hr
    p.sampler = Sampler()
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    if p.token_merging_ratio > 0:  # modules/sd_models.py apply_token_merging
        p.sd_model.forge_objects.unet = TomePatcher().patch(p.sd_model.forge_objects.unet, p.token_merging_ratio)
    return ForgeMainBackend().attach(p, settings, SEED).notes if settings is not None else []


def run_pass(p, settings=None, batch=1, hr=False, before_sampling=None, **sample_kwargs):
    notes = start_pass(p, settings, hr)
    if before_sampling is not None:
        before_sampling(p)
    x = fmh.initial_latent(p.sd_model.forge_objects.unet, batch=batch, size=SIZE, sigma=1.0, seed=2)
    return p.sampler.sample(p, x, STEPS, **sample_kwargs), notes


def the_pass(p):
    return p.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass


def forward_is_original():
    return not hasattr(CrossAttention.__dict__["forward"], "__sloth_original__")


@pytest.fixture(scope="module")
def patchers():
    return {layout: fmh.build_patcher(layout, seed=0) for layout in fmh.LAYOUTS}


@pytest.fixture(scope="module")
def baseline(patchers):
    cache = {}

    def get(layout, batch=1, cfg=5.0, tome=0.0):
        key = (layout, batch, cfg, tome)
        if key not in cache:
            p = make_p(layout, patchers[layout], batch, cfg_scale=cfg)
            p.token_merging_ratio = tome
            cache[key] = run_pass(p, None, batch=batch)[0]
        return cache[key]

    return get


# ---- the substrate is what it claims -------------------------------------------------------------
def test_substrate_is_comfyui_0375_with_forge_mains_attention_signature(patchers):
    import inspect

    assert fmh.comfy_location().startswith(fmh.comfyui_dir())
    assert list(inspect.signature(CrossAttention.forward).parameters) == [
        "self", "x", "context", "value", "mask", "transformer_options"]
    attn1 = [m for n, m in patchers["sd15"].model.diffusion_model.named_modules() if n.endswith("attn1")]
    assert len(attn1) == 10 and all(type(m) is CrossAttention for m in attn1)


def test_detection_picks_the_forge_main_adapter_here():
    assert isinstance(sloth_backend.detect(), ForgeMainBackend)


# ---- neutral, each method, combined -------------------------------------------------------------
@pytest.mark.parametrize("layout", fmh.LAYOUTS)
def test_neutral_settings_are_bit_identical_through_the_wrapper(patchers, baseline, layout):
    p = make_p(layout, patchers[layout])
    out, notes = run_pass(p, SlothSettings())
    assert the_pass(p).unet_calls == STEPS
    assert torch.equal(out, baseline(layout)) and notes == []


@pytest.mark.parametrize("layout, method", [("sd15", m) for m in METHODS] + [("sdxl", m) for m in METHODS
                                                                               if m != "tile"])
def test_each_method_alone_changes_the_output_and_stays_finite(patchers, baseline, layout, method):
    p = make_p(layout, patchers[layout])
    out, _ = run_pass(p, S(method))
    assert torch.isfinite(out).all()
    assert (out - baseline(layout)).abs().max() > 1e-3
    assert forward_is_original()
    if method == "sag":
        assert the_pass(p).patch.extra_calls["sag"] == STEPS
    else:
        assert sum(the_pass(p).patch.rewritten.values()) > 0


@pytest.mark.parametrize("layout, names", [("sd15", ("slothful", "sag")), ("sd15", ("tile", "sag")),
                                           ("sdxl", ("agentsd", "sag")),
                                           ("sdxl", ("slothful", "agentsd", "sag"))])
def test_combined_methods_change_the_output_and_stay_finite(patchers, baseline, layout, names):
    p = make_p(layout, patchers[layout])
    out, _ = run_pass(p, S(*names))
    sloth_pass = the_pass(p)
    assert torch.isfinite(out).all() and (out - baseline(layout)).abs().max() > 1e-3
    assert sum(n for name, n in sloth_pass.patch.rewritten.items() if "middle_block" not in name) > 0
    assert sloth_pass.patch.extra_calls["sag"] == (STEPS if "sag" in names else 0)


# ---- SAG: rows, split calls, CFG 1, hires ----------------------------------------------------------
def test_sag_batch_two_matches_each_image_sampled_alone(patchers):
    patcher = patchers["sd15"]
    p2 = make_p("sd15", patcher, batch=2)
    plain2, _ = run_pass(p2, None, batch=2)
    both, _ = run_pass(p2, S("sag"), batch=2)

    def alone(i, settings, apart=False):
        p1 = make_p("sd15", patcher)
        p1.cond, p1.uncond = p2.cond[i:i + 1], p2.uncond[i:i + 1]
        notes = start_pass(p1, settings)
        assert notes == [] or all("SAG" not in n for n in notes)
        x = fmh.initial_latent(patcher, batch=2, size=SIZE, sigma=1.0, seed=2)[i:i + 1]
        x = one_ulp_apart(x, torch.Generator().manual_seed(0)) if apart else x
        return p1.sampler.sample(p1, x, STEPS)

    for i in range(2):
        sag1 = alone(i, S("sag"))
        # noise floor: batch 1 vs batch 2 unpatched, and how far SAG carries one rounding of its input
        floor = noise_floor((alone(i, None), plain2[i:i + 1]), (sag1, alone(i, S("sag"), apart=True)))
        tol = assert_within_noise(sag1, both[i:i + 1], floor, SAG_FACTOR, f"row {i}")
        assert max_abs(both[i:i + 1], plain2[i:i + 1]) > 100 * tol  # SAG's effect is far above it


def test_sag_with_cond_and_uncond_in_separate_calls_matches_one_batched_call(patchers, monkeypatch):
    """No free memory: ComfyUI's batching runs uncond and cond as separate UNet calls; the map stays
    the uncond call's."""
    p = make_p("sd15", patchers["sd15"])
    batched, _ = run_pass(p, S("sag"))
    assert the_pass(p).unet_calls == 2 * STEPS  # [cond, uncond] together + SAG's call
    plain_batched, _ = run_pass(p, None)
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 0)
    split, _ = run_pass(p, S("sag"))
    assert the_pass(p).unet_calls == 3 * STEPS
    floor = noise_floor((run_pass(p, None)[0], plain_batched))  # split vs batched, unpatched
    tol = assert_within_noise(split, batched, floor, SAG_FACTOR)
    assert max_abs(batched, plain_batched) > 100 * tol  # SAG's effect is far above it


def test_sag_at_cfg_one_is_skipped_without_a_model_call(patchers, baseline):
    p = make_p("sd15", patchers["sd15"], cfg_scale=1.0)
    out, notes = run_pass(p, S("sag"))
    assert torch.equal(out, baseline("sd15", cfg=1.0))
    assert the_pass(p).patch.extra_calls["sag"] == 0 and the_pass(p).unet_calls == STEPS
    assert any("SAG skipped on steps without an uncond" in n for n in notes)


def test_sag_skips_only_the_ngms_steps(patchers):
    p = make_p("sd15", patchers["sd15"])
    out, notes = run_pass(p, S("sag"), ngms_steps=(1,))
    assert torch.isfinite(out).all()
    assert the_pass(p).patch.extra_calls["sag"] == STEPS - 1
    assert any("SAG skipped on steps without an uncond" in n for n in notes)


def test_hires_pass_uses_hr_cfg(patchers):
    """Forge main samples the hires pass with p.hr_cfg (API default 1.0), not p.cfg_scale."""
    p = make_p("sd15", patchers["sd15"], cfg_scale=5.0)
    p.hr_cfg = 1.0
    _, notes = run_pass(p, S("sag"), hr=True)
    assert any("SAG skipped on steps without an uncond" in n for n in notes)
    assert the_pass(p).patch.extra_calls["sag"] == 0
    p = make_p("sd15", patchers["sd15"], cfg_scale=1.0)
    p.hr_cfg = 4.0
    out, notes = run_pass(p, S("sag"), hr=True)
    assert not any("SAG skipped" in n for n in notes)
    assert the_pass(p).patch.extra_calls["sag"] == STEPS and torch.isfinite(out).all()


# ---- lifecycle ------------------------------------------------------------------------------------
def test_each_pass_patches_its_own_clone_and_the_hook_is_idempotent(patchers):
    p = make_p("sd15", patchers["sd15"])
    original = p.sd_model.forge_objects_after_applying_lora.unet
    before = dict(original.model_options)
    reference, _ = run_pass(p, S("slothful", "sag"))
    # the hires pass: the hook runs, forge_objects is reset, the hook runs again
    start_pass(p, S("slothful", "sag"), hr=True)
    first = p.sd_model.forge_objects.unet
    p.is_hr_pass = False
    again = ForgeMainBackend().attach(p, S("slothful", "sag"), SEED).notes  # twice on one patcher: no nesting
    second = p.sd_model.forge_objects.unet
    assert first is not original and second is not first and again == []
    assert original.model_options == before and "model_function_wrapper" not in original.model_options
    assert len(second.model_options["sampler_post_cfg_function"]) == 1
    assert second.model_options["model_function_wrapper"].sloth_foreign is None
    x = fmh.initial_latent(second, size=SIZE, sigma=1.0, seed=2)
    assert torch.equal(p.sampler.sample(p, x, STEPS), reference)


def test_class_forward_is_patched_only_during_unet_calls(patchers):
    p = make_p("sd15", patchers["sd15"])
    inside = []

    def record(p):
        the_pass(p).patch.interceptors.append(lambda *a: inside.append(not forward_is_original()))
        callback = p.sampler.callback_state

        def between(d):
            inside.append(forward_is_original())
            return callback(d)

        p.sampler.callback_state = between

    run_pass(p, S("tile"), before_sampling=record)
    assert len(inside) > STEPS and all(inside) and forward_is_original()


def test_patch_is_gone_after_an_exception_mid_sampling(patchers):
    p = make_p("sd15", patchers["sd15"])
    calls = []

    def fail_in_second_step(n, extra_options):
        calls.append(1)
        if len(calls) == 25:  # step 1, after the middle block recorded SAG's map
            raise RuntimeError("boom")
        return n

    def add(p):
        p.sd_model.forge_objects.unet.set_model_attn1_output_patch(fail_in_second_step)

    with pytest.raises(RuntimeError, match="boom"):
        run_pass(p, S("slothful", "sag"), before_sampling=add)
    assert forward_is_original()
    assert the_pass(p).patch.guidance("sag").recorded is None and not the_pass(p).patch.installed


# ---- neighbours: the WebUI's tomesd, built-in SAG ---------------------------------------------------
def test_webui_token_merging_switches_agentsd_off_with_one_note(patchers, baseline):
    p = make_p("sd15", patchers["sd15"])
    p.token_merging_ratio = 0.5
    out, notes = run_pass(p, S("agentsd"))
    assert any(n.startswith("AgentSD skipped: the WebUI's token merging") for n in notes)
    assert not the_pass(p).patch.settings.agentsd.enabled
    assert torch.equal(out, baseline("sd15", tome=0.5))  # exactly the tomesd-only image
    assert (baseline("sd15", tome=0.5) - baseline("sd15")).abs().max() > 1e-3  # tomesd really merged


def test_webui_token_merging_leaves_its_layers_to_it_and_sloth_rewrites_the_rest(patchers, baseline):
    p = make_p("sd15", patchers["sd15"])
    p.token_merging_ratio = 0.5
    out, notes = run_pass(p, S("slothful"))
    rewritten = the_pass(p).patch.rewritten
    assert torch.isfinite(out).all() and (out - baseline("sd15", tome=0.5)).abs().max() > 1e-3
    assert not any(name.startswith(("input_blocks.1.", "output_blocks.6.", "output_blocks.7.")) for name in rewritten)
    assert any(name.startswith("input_blocks.3.") for name in rewritten)
    assert any("TomePatcher.patch: tomesd_m" in n for n in notes)


def test_forge_main_builtin_sag_together_with_ours_is_warned_about(patchers):
    def builtin_sag(p):  # what sd_forge_sag's process_before_every_sampling leaves behind
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_model_attn1_replace(lambda q, k, v, extra: fmh_attention(q, k, v, extra), "middle", 0, 0)
        p.sd_model.forge_objects.unet = unet

    def fmh_attention(q, k, v, extra):
        from backend.attention import attention_function

        return attention_function(q, k, v, extra["n_heads"])

    p = make_p("sd15", patchers["sd15"], params={"sag_enabled": True})
    out, notes = run_pass(p, S("sag"), before_sampling=builtin_sag)
    assert torch.isfinite(out).all()
    assert any("built-in SelfAttentionGuidance is enabled too" in n for n in notes)
    assert any("replaces attn1 of middle 0.0" in n and "Sloth's SAG is skipped" in n for n in notes)
    assert the_pass(p).patch.extra_calls["sag"] == 0


# ---- models that are not a UNet -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flux", "sd3"])
def test_a_non_unet_model_is_skipped_with_one_note_and_no_method_keys(patchers, kind):
    p = make_p("sd15", patchers["sd15"], kind=kind)
    new_job(p).settings = S("slothful", "sag")
    p.extra_generation_params = infotext.to_params(job_of(p).settings)
    for hr in (False, True):  # both passes of a hires job
        p.is_hr_pass = hr
        p.sampler = Sampler()
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
        notes = hooks.attach_pass(p, ForgeMainBackend())
        assert p.sd_model.forge_objects.unet is p.sd_model.forge_objects_after_applying_lora.unet
        assert len(notes) == 1 and "Nothing was patched" in notes[0]
    assert set(p.extra_generation_params) == {infotext.NOTES_KEY}
    assert p.extra_generation_params[infotext.NOTES_KEY] == notes[0]


def test_a_diffusion_model_without_unet_blocks_is_skipped(patchers):
    class FluxLike(torch.nn.Module):
        pass

    patcher = patchers["sd15"].clone()
    patcher.model = SimpleNamespace(diffusion_model=FluxLike())
    p = make_p("sd15", patcher, kind="sd1")
    p.sampler = Sampler()
    skipped = ForgeMainBackend().attach(p, S("slothful"), SEED)
    assert skipped.nothing_patched and "FluxLike, not a UNet" in skipped.notes[0]


# ---- info text round trip ------------------------------------------------------------------------
def test_info_text_round_trip_reproduces_the_image(patchers):
    """The keys written for a Forge main job, read back (as a paste would), give the same image."""
    settings = S("slothful", "sag")
    p = make_p("sd15", patchers["sd15"])
    first, _ = run_pass(p, settings)
    restored = settings_from_dict(infotext.read(infotext.to_params(settings)))
    assert restored == settings
    again, _ = run_pass(p, restored)
    assert torch.equal(first, again)


def test_show_maps_records_through_the_adapter_and_changes_no_output(patchers):
    """"Show Sloth maps" on Forge main: the hooks' recorder reaches the pass, the output is unchanged."""
    from PIL import Image

    outputs, recorders = {}, {}
    for show in (False, True):
        settings = settings_from_dict({**METHODS["slothful"], **METHODS["sag"], "show_maps": show})
        p = make_p("sd15", patchers["sd15"])
        new_job(p).settings = settings
        p.batch_size, p.n_iter, p.iteration = 1, 1, 0
        p.sampler = Sampler()
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
        hooks.attach_pass(p, ForgeMainBackend())
        x = fmh.initial_latent(p.sd_model.forge_objects.unet, batch=1, size=SIZE, sigma=1.0, seed=2)
        outputs[show] = p.sampler.sample(p, x, STEPS)
        recorders[show] = job_of(p).maps[1] if job_of(p).maps else None
        processed = SimpleNamespace(images=[Image.new("RGB", (SIZE[1] * 8, SIZE[0] * 8))], index_of_first_image=0)
        drawn = hooks.append_maps(p, processed)
        assert len(processed.images) == 1 + len(drawn)
        assert [m.caption.split(" - ")[0] for m in drawn] == (["Sloth SAG map", "Sloth K/V budget"] if show else [])
    assert torch.equal(outputs[False], outputs[True]) and recorders[False] is None
    recorder = recorders[True]
    assert len(recorder.overlay_records("sag")) == STEPS and recorder.budget[("input", 0)][0] < 1


# ---- the refiner switch inside sampling ------------------------------------------------------------
class RefinerDenoiser:
    """Forge main @ dfdcbab6 ``modules/sd_samplers_kdiffusion.py`` ``CFGDenoiserKDiffusion``: its
    ``inner_model`` is rebuilt from the current ``shared.sd_model`` when ``model_wrap`` is None (the
    wrap's ``inner_model`` is that model), ``update_inner_model`` sets it to None; ``forward`` calls
    ``modules/sd_samplers_common.py`` ``apply_refiner`` first and then samples with
    ``inner_model.inner_model.forge_objects.unet``. ``apply_refiner`` (by steps: ``sigma`` is None):
    past ``p.refiner_switch_at`` and not already the refiner, it writes ``Refiner``,
    ``forge_model_reload`` makes the refiner ``shared.sd_model`` (here: a separately built engine),
    then ``update_inner_model()`` and ``sampling_prepare`` of the new UnetPatcher. Not reproduced:
    hires options, extra networks, ``setup_conds``, ``sampling_cleanup``."""

    def __init__(self, p, shared):
        self.p, self.shared, self.model_wrap, self.step, self.steps = p, shared, None, 0, None

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = SimpleNamespace(inner_model=self.shared.sd_model)
        return self.model_wrap

    def update_inner_model(self):
        self.model_wrap = None

    def apply_refiner(self):
        p = self.p
        if self.step / self.steps < p.refiner_switch_at or self.shared.sd_model is p.refiner_checkpoint_info:
            return False
        p.extra_generation_params["Refiner"] = "refiner"
        self.shared.sd_model = p.refiner_checkpoint_info
        self.update_inner_model()
        return True

    def forward(self, x, sigma, cond, uncond):
        self.apply_refiner()
        unet = self.inner_model.inner_model.forge_objects.unet
        self.step += 1
        return sampling_function.sampling_function_inner(unet.model, x, sigma, uncond, cond, self.p.cfg_scale,
                                                         unet.model_options, SEED)


def run_refiner_pass(patchers, settings, switch_at, before_sampling=None):
    base = ForgeDiffusionEngine(patchers["sd15"], "sd1")
    refiner = ForgeDiffusionEngine(fmh.build_patcher("sd15", seed=7), "sd1")
    p = make_p("sd15", patchers["sd15"])
    p.sd_model, p.refiner_checkpoint_info, p.refiner_switch_at = base, refiner, switch_at
    shared = SimpleNamespace(sd_model=base)
    p.sampler = Sampler()  # what processing.py does before the script hook (see start_pass)
    p.sampler.model_wrap_cfg = denoiser = RefinerDenoiser(p, shared)  # the sampler's own, from its creation
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    notes = ForgeMainBackend().attach(p, settings, SEED).notes if settings is not None else []
    if before_sampling is not None:
        before_sampling(p)
    denoiser.steps = STEPS
    sigmas = fmh.karras_sigmas(base.forge_objects.unet, STEPS)
    x = fmh.initial_latent(base.forge_objects.unet, size=SIZE, sigma=1.0, seed=2) * sigmas[0]
    cond, uncond = fmh.to_cond_list(p.cond), fmh.to_cond_list(p.uncond)
    with torch.no_grad():
        for i in range(STEPS):
            denoised = denoiser.forward(x, sigmas[i].expand(x.shape[0]).clone(), cond, uncond)
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
            p.sampler.callback_state({"i": i})
    return x, notes, p, shared, refiner


def test_an_exception_after_the_refiner_switch_leaves_neither_unet_patched(patchers):
    """An error inside the refiner's patched UNet (in one of its attn1 calls) undoes everything:
    the class forward is the original again and no layer of either UNet keeps a forward or a hook."""
    failed, passes = [], []

    def fail_in_the_refiner(p):
        refiner_layers = set(p.refiner_checkpoint_info.forge_objects_after_applying_lora.unet.model
                             .diffusion_model.modules())

        def interceptor(module, info, x, call):
            if module in refiner_layers and not failed:
                failed.append(call.step)
                raise RuntimeError("boom")

        the_pass(p).patch.interceptors.append(interceptor)
        passes.append(p)

    with pytest.raises(RuntimeError, match="boom"):
        run_refiner_pass(patchers, S("slothful"), 0.5, fail_in_the_refiner)
    p = passes[0]
    assert failed == [2]  # the refiner's first step
    assert forward_is_original() and not the_pass(p).patch.installed
    refiner = p.refiner_checkpoint_info.forge_objects_after_applying_lora.unet
    for unet in (patchers["sd15"].model.diffusion_model, refiner.model.diffusion_model):
        assert not any(m._forward_pre_hooks for m in unet.modules())
        assert not any("forward" in m.__dict__ for m in unet.modules())


def test_refiner_unet_calls_go_through_sloth_with_the_same_clock(patchers):
    seen = []

    def record(p):
        sloth = the_pass(p)
        sloth.patch.interceptors.append(
            lambda module, info, x, call: seen.append((call.step, module)) if info.index == 0 else None)
        p.sloth = sloth

    _, notes, p, shared, refiner = run_refiner_pass(patchers, S("slothful"), 0.5, record)
    refiner_layers = set(refiner.forge_objects_after_applying_lora.unet.model.diffusion_model.modules())
    assert p.extra_generation_params["Refiner"] == "refiner" and shared.sd_model is refiner
    assert {step for step, module in seen if module in refiner_layers} == {2}  # step 2 of 0..2 on the refiner
    assert {step for step, module in seen if module not in refiner_layers} == {0, 1}
    assert p.sloth.unet_calls == STEPS
    assert any("Refiner: its UNet was patched too" in n for n in notes)
    assert "model_function_wrapper" not in refiner.forge_objects_after_applying_lora.unet.model_options
    plain, _, _, _, _ = run_refiner_pass(patchers, None, 0.0)
    sloth, _, _, _, _ = run_refiner_pass(patchers, S("slothful"), 0.0)
    assert not torch.equal(plain, sloth)


def test_a_guidance_method_registered_in_one_module_makes_its_extra_call(patchers, baseline):
    """tests/method_examples.py's Echo guidance through Forge main's calc_cond_uncond_batch."""
    from lib_sloth import methods
    from lib_sloth.settings import settings_from_dict
    from method_examples import ECHO, ECHO_ON

    with methods.registered(ECHO):
        p = make_p("sd15", patchers["sd15"])
        out, _ = run_pass(p, settings_from_dict(ECHO_ON))
        assert the_pass(p).patch.extra_calls["echo"] == STEPS
    assert torch.isfinite(out).all() and not torch.allclose(out, baseline("sd15"), atol=1e-4)
