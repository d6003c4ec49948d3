"""The refiner switch inside sampling on reForge / Forge (issue 10 item 1, the ldm_patched side).

reForge's ``apply_refiner`` loads the refiner in the middle of the pass and the CFG denoiser then
samples with the refiner's own, fresh ``forge_objects.unet`` (tests/forge_harness.py
`RefinerCFGDenoiser` / `apply_refiner` mirror it): the pass's Sloth must follow it there.
"""
from types import SimpleNamespace

import pytest
import torch

import forge_harness as fh

fh.setup()

from modules_forge.forge_loader import attach_forge_objects  # noqa: E402

from lib_sloth.settings import settings_from_dict  # noqa: E402
from lib_sloth.webui.forge import ForgeBackend  # noqa: E402

STEPS = 4
SIZE = (32, 32)
SEED = 1234
SLOTHFUL = {"slothful": {"enabled": True, "peak_time": 0.0, "time_decay": 0.0, "keep_middle": False,
                         "input": {"slothful": 4.0, "depth_decay": 0.0},
                         "output": {"slothful": 4.0, "depth_decay": 0.0}}}
SAG = {"sag": {"enabled": True, "scale": 1.0}}


class Sampler:
    """reForge's ``KDiffusionSampler`` as a pass sees it (``modules/sd_samplers_kdiffusion.py``):
    a new one per pass, its ``model_wrap_cfg`` the CFG denoiser; ``launch_sampling`` stores the
    step count on it, ``callback_state`` runs once per step."""

    def __init__(self, p, shared):
        self.model_wrap_cfg = fh.RefinerCFGDenoiser(p, shared)
        self.states = []

    def callback_state(self, d):
        self.states.append(d["i"])

    def sample(self, x):
        denoiser = self.model_wrap_cfg
        denoiser.steps = denoiser.total_steps = STEPS
        unet = denoiser.inner_model.inner_model.forge_objects.unet
        sigmas = fh.karras_sigmas(unet, STEPS)
        cb = lambda i, sigma, x_i, denoised: self.callback_state({"i": i, "x": x_i})  # noqa: E731
        unet.patch_model()
        return fh.sample_euler_denoiser(denoiser, x * sigmas[0], sigmas, callback=cb)


@pytest.fixture(scope="module")
def patchers():
    return fh.build_patcher("sd15", seed=0), fh.build_patcher("sd15", seed=7)


def run(patchers, data, switch_at=0.5, before_sampling=None):
    """One txt2img pass with "Refiner" ticked: the script hook (our attach, if ``data`` is given)
    sees the base model; the refiner is a separately loaded model with its own forge_objects."""
    base_patcher, refiner_patcher = patchers
    base = attach_forge_objects(SimpleNamespace(), base_patcher)
    refiner = attach_forge_objects(SimpleNamespace(short_title="refiner"), refiner_patcher)
    shared = SimpleNamespace(sd_model=base)
    cond, uncond = fh.make_text_conds("sd15", batch=1, seed=1)
    p = SimpleNamespace(sd_model=base, steps=STEPS, cfg_scale=5.0, all_seeds=[SEED], seeds=[SEED],
                        extra_generation_params={}, cond=cond, uncond=uncond,
                        refiner_checkpoint_info=refiner, refiner_switch_at=switch_at)
    p.sampler = Sampler(p, shared)
    base.forge_objects = base.forge_objects_after_applying_lora.shallow_copy()
    notes = ForgeBackend().attach(p, settings_from_dict(data), SEED).notes if data is not None else []
    if before_sampling is not None:
        before_sampling(p)
    x = fh.initial_latent(base.forge_objects.unet, size=SIZE, sigma=1.0, seed=2)
    out = p.sampler.sample(x)
    return out, notes, p, shared


def test_unet_calls_after_the_switch_go_through_sloth_with_the_same_clock(patchers):
    base_patcher, refiner_patcher = patchers
    refiner_layers = set(refiner_patcher.model.diffusion_model.modules())
    base_layers = set(base_patcher.model.diffusion_model.modules())
    refiner_options = dict(refiner_patcher.model_options)
    seen = []

    def record(p):
        sloth = p.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass
        sloth.patch.interceptors.append(
            lambda module, info, x, call: seen.append(
                (call.step, call.total, "refiner" if module in refiner_layers else
                 "base" if module in base_layers else "?")) if info.index == 0 else None)
        p.sloth = sloth

    out, notes, p, shared = run(patchers, SLOTHFUL, before_sampling=record)
    assert p.extra_generation_params["Refiner"] == "refiner"  # the WebUI did switch, at step 2
    assert shared.sd_model is p.refiner_checkpoint_info
    assert sorted(set(seen)) == [(0, 4, "base"), (1, 4, "base"), (2, 4, "refiner"), (3, 4, "refiner")]
    assert p.sloth.unet_calls == STEPS
    assert any("Refiner: its UNet was patched too" in n for n in notes)
    # the refiner's own patcher was cloned, never changed; the clone carries this pass's wrapper
    refiner_unet = shared.sd_model.forge_objects.unet
    assert refiner_unet is not refiner_patcher
    assert refiner_unet.model_options["model_function_wrapper"].sloth_pass is p.sloth
    assert refiner_patcher.model_options == refiner_options
    assert shared.sd_model.forge_objects_after_applying_lora.unet is refiner_patcher
    assert torch.isfinite(out).all()


def test_the_refiner_part_changes_the_image_and_neutral_stays_identical(patchers):
    plain, _, _, _ = run(patchers, None)
    neutral, _, _, _ = run(patchers, {})
    assert torch.equal(plain, neutral)
    # switched at step 0: every UNet call is the refiner's, so Sloth changes the image only if it followed
    plain_refiner, _, _, _ = run(patchers, None, switch_at=0.0)
    sloth_refiner, notes, _, _ = run(patchers, SLOTHFUL, switch_at=0.0)
    assert any("Refiner: its UNet was patched too" in n for n in notes)
    assert not torch.equal(plain_refiner, sloth_refiner)
    assert torch.isfinite(sloth_refiner).all()


def test_sag_follows_the_refiner(patchers):
    out, notes, p, shared = run(patchers, SAG)
    refiner_unet = shared.sd_model.forge_objects.unet
    post_cfg = refiner_unet.model_options.get("sampler_post_cfg_function") or []
    assert len(post_cfg) == 1 and post_cfg[0].sloth_pass is refiner_unet.model_options[
        "model_function_wrapper"].sloth_pass
    assert torch.isfinite(out).all()
    plain, _, _, _ = run(patchers, None)
    assert not torch.equal(out, plain)


def test_a_refiner_that_is_not_a_unet_is_left_alone_with_a_note(patchers):
    class FluxLike(torch.nn.Module):
        pass

    base_patcher, _ = patchers
    base = attach_forge_objects(SimpleNamespace(), base_patcher)
    p = SimpleNamespace(sd_model=base, steps=STEPS, cfg_scale=5.0, extra_generation_params={})
    p.sampler = Sampler(p, SimpleNamespace(sd_model=base))
    notes = ForgeBackend().attach(p, settings_from_dict(SLOTHFUL), SEED).notes
    sloth = base.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass
    other = base_patcher.clone()
    other.model = SimpleNamespace(diffusion_model=FluxLike())
    objects = SimpleNamespace(unet=other)
    sloth.follow(objects)
    assert objects.unet is other and "model_function_wrapper" not in other.model_options
    assert any("Refiner: the refiner is not a UNet model; it ran without Sloth" in n for n in notes)
    assert sloth.patch.unet is base_patcher.model.diffusion_model


def test_an_exception_after_the_switch_leaves_neither_unet_patched(patchers):
    """An error inside the refiner's patched UNet (mid-forward, in one of its attn1 calls) undoes
    everything: the class forward is the original again, no layer of either UNet keeps an instance
    forward or a hook, and the pass's patch is not installed."""
    from ldm_patched.ldm.modules.attention import CrossAttention

    base_patcher, refiner_patcher = patchers
    refiner_layers = set(refiner_patcher.model.diffusion_model.modules())
    failed = []

    def fail_in_the_refiner(module, info, x, call):
        if module in refiner_layers and not failed:
            failed.append(call.step)
            raise RuntimeError("boom")
        return None

    def add(p):
        p.sloth = p.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass
        p.sloth.patch.interceptors.append(fail_in_the_refiner)

    passes = []
    with pytest.raises(RuntimeError, match="boom"):
        run(patchers, SLOTHFUL, before_sampling=lambda p: (add(p), passes.append(p)))
    assert failed == [2]  # the refiner's first step, after the switch at 0.5
    assert not hasattr(CrossAttention.__dict__["forward"], "__sloth_original__")
    assert not passes[0].sloth.patch.installed
    for patcher in patchers:
        unet = patcher.model.diffusion_model
        assert not any(m._forward_pre_hooks for m in unet.modules())  # incl. the block hooks
        assert not any("forward" in m.__dict__ for m in unet.modules())


def test_a_refiner_switch_inside_a_hires_only_second_pass_is_followed(patchers):
    """Hires fix with the refiner in the second pass only (reForge ``modules/sd_samplers_common.py``
    ``apply_refiner`` lines 208-218, option ``hires_fix_refiner_pass`` = "second pass", the default):
    the first pass never switches; the hires pass, attached to the base model by its own script hook,
    switches at its step 2 and its Sloth must follow the refiner there."""
    base_patcher, refiner_patcher = patchers
    refiner_layers = set(refiner_patcher.model.diffusion_model.modules())
    base = attach_forge_objects(SimpleNamespace(), base_patcher)
    refiner = attach_forge_objects(SimpleNamespace(short_title="refiner"), refiner_patcher)
    shared = SimpleNamespace(sd_model=base)
    cond, uncond = fh.make_text_conds("sd15", batch=1, seed=1)
    p = SimpleNamespace(sd_model=base, steps=STEPS, cfg_scale=5.0, all_seeds=[SEED], seeds=[SEED],
                        extra_generation_params={}, cond=cond, uncond=uncond, enable_hr=True, is_hr_pass=False,
                        refiner_checkpoint_info=refiner, refiner_switch_at=0.5)
    seen = []
    passes = []
    for is_hr_pass in (False, True):  # processing.py: the first pass, then sample_hr_pass
        p.is_hr_pass = is_hr_pass
        p.sampler = Sampler(p, shared)
        base.forge_objects = base.forge_objects_after_applying_lora.shallow_copy()
        notes = ForgeBackend().attach(p, settings_from_dict(SLOTHFUL), SEED).notes
        sloth = p.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass
        sloth.patch.interceptors.append(
            lambda module, info, x, call, hr=is_hr_pass: seen.append(
                (hr, call.step, "refiner" if module in refiner_layers else "base")) if info.index == 0 else None)
        passes.append((sloth, notes))
        x = fh.initial_latent(base.forge_objects.unet, size=SIZE, sigma=1.0, seed=2)
        out = p.sampler.sample(x)
        assert (shared.sd_model is refiner) == is_hr_pass  # no switch in the first pass
    assert sorted(set(seen)) == [(False, 0, "base"), (False, 1, "base"), (False, 2, "base"), (False, 3, "base"),
                                 (True, 0, "base"), (True, 1, "base"), (True, 2, "refiner"), (True, 3, "refiner")]
    (first, first_notes), (hires, hires_notes) = passes
    assert not any("Refiner" in n for n in first_notes)
    assert any("Refiner: its UNet was patched too" in n for n in hires_notes)
    assert shared.sd_model.forge_objects.unet.model_options["model_function_wrapper"].sloth_pass is hires
    assert p.extra_generation_params["Refiner"] == "refiner" and "Hires refiner" not in p.extra_generation_params
    assert torch.isfinite(out).all()
