"""The schedule position and noise level the diffusers adapter reads from the pipeline's run."""
import math

import pytest
import torch

pytest.importorskip("diffusers")

import diffusers_unets as du  # noqa: E402
import noise  # noqa: E402
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,  # noqa: E402
                       HeunDiscreteScheduler, StableDiffusionImg2ImgPipeline)

from lib_sloth.diffusers import apply  # noqa: E402

SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++ 2m": DPMSolverMultistepScheduler,
              "heun": HeunDiscreteScheduler}
STEPS = 6


@pytest.fixture(scope="module")
def unet():
    return du.unet(du.sd15_config())


def pipeline(unet, scheduler, img2img=False):
    parts = dict(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler, safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    pipe = (StableDiffusionImg2ImgPipeline if img2img else du.StableDiffusionPipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def observe(pipe, img2img=False, guidance_scale=5.0, observer=None):
    """Per UNet call: (step, total) as the adapter saw them; per loop iteration: the pipeline's i."""
    seen, loop = [], []
    cond, uncond = du.embeds()
    extra = dict(image=torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(5)), strength=0.5) \
        if img2img else dict(height=256, width=256)

    def callback(p, i, t, kwargs):
        loop.append(i)
        return kwargs

    with torch.no_grad(), apply(pipe, "slothful") as run:
        def look(module, args, kwargs):
            seen.append((run.patch.step, run.patch.total))
            if observer is not None:
                observer(run, args, kwargs)

        handle = pipe.unet.register_forward_pre_hook(look, with_kwargs=True)  # runs after the adapter's
        try:
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=STEPS,
                 guidance_scale=guidance_scale, callback_on_step_end=callback, output_type="latent",
                 generator=torch.Generator().manual_seed(1), **extra)
        finally:
            handle.remove()
    return seen, loop, pipe._num_timesteps


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img-strength-0.5"])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_step_and_total_follow_the_pipelines_loop(unet, name, img2img):
    scheduler = du.sd_schedule(SCHEDULERS[name], **({"clip_sample": False} if name == "ddim" else {}))
    seen, loop, iterations = observe(pipeline(unet, scheduler, img2img), img2img)
    order = scheduler.order
    assert loop == list(range(iterations)) and len(seen) == iterations
    steps = STEPS // 2 if img2img else STEPS
    assert seen == [(i // order, steps) for i in loop], (name, seen)
    assert math.ceil(iterations / order) == steps
    if name == "heun":  # two UNet calls per step, except the last step's Euler finish
        assert iterations == 2 * steps - 1


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "dpm++ 2m"])
def test_the_noise_space_is_the_one_the_scheduler_predicts_x0_in(unet, name):
    """eps -> x0 through the adapter's NoiseSpace equals the scheduler's own x0 for each call."""
    scheduler = du.sd_schedule(SCHEDULERS[name], **({"clip_sample": False} if name == "ddim" else {}))
    pipe = pipeline(unet, scheduler)
    ours, theirs, floors = [], [], []
    nudge = torch.Generator().manual_seed(0)

    def observer(run, args, kwargs):
        x_in, t = args[0], args[1]
        eps = pipe.unet.__class__.forward(pipe.unet, x_in, t, **kwargs)[0]
        space = run.clock.noise_space(t, x_in)
        ours.append(space.to_x0("eps", x_in, eps))
        # the floor: how far this conversion carries one fp32 rounding of its inputs (at high noise
        # x0 = (x - sigma eps) / alpha amplifies it ~15x); the scheduler's formula rounds in other places
        nudged = space.to_x0("eps", noise.one_ulp_apart(x_in, nudge), noise.one_ulp_apart(eps, nudge))
        floors.append(noise.max_abs(ours[-1], nudged))
        if name == "dpm++ 2m":  # its x0 conversion at this iteration's sigma (step() does not return x0)
            alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[len(theirs)])
            theirs.append((x_in - sigma_t * eps) / alpha_t)

    original_step = scheduler.step

    def step(*args, **kwargs):
        out = original_step(*args, **kwargs)
        if name != "dpm++ 2m":
            theirs.append(out.pred_original_sample if hasattr(out, "pred_original_sample") else out[1])
        return out

    scheduler.step = step  # wrapped again by the adapter's clock inside the block
    try:
        observe(pipe, guidance_scale=1.0, observer=observer)
    finally:
        assert scheduler.step is step  # the adapter put back what it found
        del scheduler.step
    assert len(ours) == len(theirs) > 0
    for i, (got, want, floor) in enumerate(zip(ours, theirs, floors)):
        # two formulas of a few fp32 operations each: 4 roundings' worth of the floor. A wrong sigma
        # or alpha moves x0 by a share of its size, orders above this
        noise.assert_within_noise(got, want, floor, 4.0, f"{name}, call {i}")
