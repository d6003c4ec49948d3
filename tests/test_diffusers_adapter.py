"""The diffusers adapter on real diffusers pipelines (tiny random UNets): neutrality, effect,
restoration, chaining, settings and maps."""
import pytest
import torch

pytest.importorskip("diffusers")  # test-only dependency (requirements-dev.txt)

import diffusers_unets as du  # noqa: E402
from diffusers import EulerDiscreteScheduler  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # noqa: E402

from lib_sloth import infotext, settings_from_dict  # noqa: E402
from lib_sloth.diffusers import apply  # noqa: E402
from lib_sloth.diffusers.processor import SlothProcessor  # noqa: E402
from lib_sloth.fields import SettingsError  # noqa: E402

SIZE = 256  # pixels; no VAE, so the latent is 32 x 32 (the pipeline's vae_scale_factor is 8)
METHODS = du.METHODS
NEUTRAL = [None, "off", {"slothful.enabled": False, "tile.enabled": False}, {"sag.enabled": True, "sag.scale": 0},
           {"show_maps": True}]


def generate(pipe, settings=None, steps=4, batch=1, guidance_scale=5.0, seed=1, run_out=None, **kwargs):
    """The pipeline's final latents [batch, 4, 32, 32], with Sloth when `settings` is not None."""
    cond, uncond = du.embeds(seed=seed, width=pipe.unet.config.cross_attention_dim)
    call = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, height=SIZE, width=SIZE,
                num_inference_steps=steps, guidance_scale=guidance_scale, num_images_per_prompt=batch,
                generator=torch.Generator().manual_seed(seed), output_type="latent", **kwargs)
    with torch.no_grad():
        if settings is None:
            return pipe(**call).images
        with apply(pipe, settings, seed=seed) as run:
            out = pipe(**call).images
        if run_out is not None:
            run_out.append(run)
        return out


def processors(unet):
    return dict(unet.attn_processors)


def hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.fixture(scope="module")
def sd15_pipe():
    return du.sd_pipeline()


@pytest.fixture(scope="module")
def sd15_base(sd15_pipe):
    return generate(sd15_pipe)


@pytest.mark.parametrize("settings", NEUTRAL, ids=["none", "off", "disabled", "sag-scale-0", "maps-only"])
def test_neutral_settings_are_bit_identical_and_install_nothing(sd15_pipe, sd15_base, settings):
    before = processors(sd15_pipe.unet)
    with apply(sd15_pipe, settings) as run:
        assert processors(sd15_pipe.unet) == before and hooks(sd15_pipe.unet) == 0
        assert "step" not in sd15_pipe.scheduler.__dict__
        out = generate(sd15_pipe)
    assert torch.equal(out, sd15_base)
    assert run.infotext == "" and not run.rewritten


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_changes_the_image_and_leaves_everything_as_found(sd15_pipe, sd15_base, method):
    before = processors(sd15_pipe.unet)
    runs = []
    out = generate(sd15_pipe, METHODS[method], run_out=runs)
    assert (out - sd15_base).abs().max() > 1e-3, method
    assert runs[0].rewritten, method
    assert processors(sd15_pipe.unet) == before and hooks(sd15_pipe.unet) == 0
    assert not {"step", "set_timesteps"} & set(sd15_pipe.scheduler.__dict__)
    assert torch.equal(generate(sd15_pipe), sd15_base)  # nothing left behind


def test_inside_the_block_every_attn1_and_only_attn1_has_a_sloth_processor(sd15_pipe):
    with apply(sd15_pipe, "slothful") as run:
        current = processors(sd15_pipe.unet)
        ours = {k for k, p in current.items() if isinstance(p, SlothProcessor)}
        assert ours == {f"{info.name}.processor" for info in run.patch.layers.values()}
        assert all(k.endswith("attn1.processor") for k in ours)
        assert all(isinstance(current[k], AttnProcessor2_0) for k in current if k not in ours)


def _raise_at_step(at: int, error: BaseException):
    def callback(pipe, i, t, kwargs):
        if i == at:
            raise error
        return kwargs

    return callback


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "interrupt"])
def test_an_exception_or_interrupt_mid_run_restores_everything(sd15_pipe, sd15_base, error):
    before = processors(sd15_pipe.unet)
    for method in ("slothful", "sag"):
        with pytest.raises(type(error)):
            generate(sd15_pipe, METHODS[method], callback_on_step_end=_raise_at_step(1, error))
        assert processors(sd15_pipe.unet) == before and hooks(sd15_pipe.unet) == 0, method
        assert not {"step", "set_timesteps"} & set(sd15_pipe.scheduler.__dict__)
    assert torch.equal(generate(sd15_pipe), sd15_base)


def test_an_exception_inside_a_unet_call_restores_everything(sd15_pipe, sd15_base):
    before = processors(sd15_pipe.unet)
    layer = next(iter(sd15_pipe.unet.mid_block.attentions[0].transformer_blocks)).ff

    def fail(module, args):
        raise RuntimeError("inside the UNet")

    handle = layer.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="inside the UNet"):
            generate(sd15_pipe, METHODS["sag"])
    finally:
        handle.remove()
    assert processors(sd15_pipe.unet) == before and hooks(sd15_pipe.unet) == 0
    assert torch.equal(generate(sd15_pipe), sd15_base)


class Counting(AttnProcessor2_0):
    """A user's own processor: counts its calls, computes like SDPA."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.calls += 1
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def test_a_foreign_processor_is_chained_never_bypassed_and_restored(sd15_pipe, sd15_base):
    attn = sd15_pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    original = attn.processor
    mine = Counting()
    attn.set_processor(mine)
    try:
        runs = []
        generate(sd15_pipe, METHODS["slothful"], run_out=runs)
        assert mine.calls == 4 and attn.processor is mine  # every step's call reached it
        assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1" not in runs[0].rewritten
        assert any("Counting is not plain attention" in n for n in runs[0].notes)
    finally:
        attn.set_processor(original)


def test_sag_skips_with_a_note_when_its_layer_has_a_foreign_processor(sd15_pipe, sd15_base):
    attn = sd15_pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1  # where SAG reads its map
    original = attn.processor
    attn.set_processor(Counting())
    try:
        runs = []
        out = generate(sd15_pipe, METHODS["sag"], run_out=runs)
        assert torch.equal(out, sd15_base) and runs[0].extra_unet_calls == 0
        assert any("Self-Attention Guidance skipped" in n and "middle 0" in n for n in runs[0].notes), runs[0].notes
    finally:
        attn.set_processor(original)


def test_processors_replaced_inside_the_block_are_kept_with_a_note(sd15_pipe):
    before = processors(sd15_pipe.unet)
    try:
        with apply(sd15_pipe, "slothful") as run:
            sd15_pipe.unet.set_attn_processor(AttnProcessor())
        assert all(isinstance(p, AttnProcessor) for p in processors(sd15_pipe.unet).values())
        assert any("were replaced while Sloth was on" in n for n in run.notes)
    finally:
        sd15_pipe.unet.set_attn_processor(before)


def test_masked_and_cross_attention_calls_are_the_wrapped_processors_own_output(sd15_pipe):
    block = sd15_pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(2, 1024, 32, generator=g), torch.randn(2, 8, du.CONTEXT, generator=g)
    mask = torch.zeros(2, 1, 1024)
    with torch.no_grad():
        with apply(sd15_pipe, "slothful") as run:
            run.set_step(4, 10)  # Slothful's peak: an unmasked call of this layer would be rewritten
            run.patch.latent_hw = (32, 32)  # as inside a UNet call on a 32 x 32 latent
            masked, cross, plain = block.attn1(x, attention_mask=mask), block.attn2(x, encoder_hidden_states=ctx), block.attn1(x)
        assert torch.equal(masked, block.attn1(x, attention_mask=mask))
        assert torch.equal(cross, block.attn2(x, encoder_hidden_states=ctx))
        assert not torch.equal(plain, block.attn1(x))
    assert dict(run.rewritten) == {"down_blocks.0.attentions.0.transformer_blocks.0.attn1": 1}


# ---- settings -------------------------------------------------------------------------------
def test_settings_take_the_webuis_forms_and_validation(sd15_pipe):
    data = {"preset": "soft", "slothful": {"output": {"v_blend": 0.1}}}
    with apply(sd15_pipe, data) as run:
        pass
    assert run.settings.slothful.enabled and run.settings.slothful.input.k_blend == 0.4
    assert run.settings.slothful.output.v_blend == 0.1
    assert apply(sd15_pipe, "speed").settings == settings_from_dict({"nearsighted": {"enabled": True}})
    with pytest.raises(SettingsError, match="tile_size"):
        apply(sd15_pipe, {"tile.enabled": True, "tile.tile_size": 500})
    with pytest.raises(SettingsError):
        apply(sd15_pipe, "no such preset")


def test_the_infotext_is_the_webuis_entries_as_one_string(sd15_pipe):
    run = apply(sd15_pipe, {"preset": "soft", "sag.enabled": True})
    params = infotext.to_params(run.settings)
    assert run.infotext == ", ".join(f"{k}: {v}" for k, v in params.items())
    parsed = dict(part.split(": ", 1) for part in run.infotext.split(", "))
    assert infotext.read(parsed)["slothful.input.k_blend"] == 0.4 and infotext.read(parsed)["sag.enabled"]


# ---- maps -----------------------------------------------------------------------------------
def test_show_maps_returns_the_map_images_as_a_list(sd15_pipe):
    from PIL import Image

    runs = []
    generate(sd15_pipe, {**METHODS["nearsighted"], **METHODS["sag"], "nearsighted.max_depth": 1,
                         "show_maps": True}, run_out=runs)
    image = Image.new("RGB", (SIZE, SIZE), (90, 90, 90))
    maps = runs[0].maps(image)
    assert len(maps) == 3 and all(isinstance(m, Image.Image) for m in maps)  # SAG, level-0 tiles, K/V budget
    captions = [m.info["Sloth map"] for m in maps]
    assert all("diffusers" in c for c in captions), captions
    assert "SAG" in captions[0] and "tile" in captions[1].lower() and "budget" in captions[2].lower(), captions
    assert apply(sd15_pipe, "slothful").maps(image) == []  # maps off: nothing recorded


# ---- CFG, batches, prediction types, SDXL ---------------------------------------------------
def test_sag_with_guidance_scale_one_is_skipped_with_a_note(sd15_pipe):
    runs = []
    base = generate(sd15_pipe, guidance_scale=1.0)
    out = generate(sd15_pipe, METHODS["sag"], guidance_scale=1.0, run_out=runs)
    assert torch.equal(out, base)
    assert any("guidance_scale <= 1" in n for n in runs[0].notes)


def test_batches_of_two_images_are_each_guided_and_rewritten(sd15_pipe):
    base = generate(sd15_pipe, batch=2)
    for method in ("sag", "agentsd", "slothful"):
        out = generate(sd15_pipe, METHODS[method], batch=2)
        assert all((out[i] - base[i]).abs().max() > 1e-3 for i in range(2)), method


def test_v_prediction_with_euler_and_the_sd2_layout():
    pipe = du.sd_pipeline(du.sd2_config(), du.sd_schedule(EulerDiscreteScheduler, prediction_type="v_prediction"))
    base = generate(pipe)
    for method in ("sag", "nearsighted"):
        runs = []
        out = generate(pipe, METHODS[method], run_out=runs)
        assert (out - base).abs().max() > 1e-3 and runs[0].rewritten, method
    assert torch.equal(generate(pipe, "off"), base)


def test_sdxl_shaped_unet_with_added_time_ids():
    pipe = du.sdxl_pipeline()
    cond, uncond = du.embeds()
    pooled, neg_pooled = du.pooled()

    def sdxl(settings=None):
        call = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=neg_pooled, height=SIZE, width=SIZE, num_inference_steps=3,
                    guidance_scale=5.0, generator=torch.Generator().manual_seed(1), output_type="latent")
        with torch.no_grad():
            if settings is None:
                return pipe(**call).images, None
            with apply(pipe, settings) as run:
                return pipe(**call).images, run

    base, _ = sdxl()
    assert torch.equal(sdxl("off")[0], base)
    for method in ("slothful", "sag", "agentsd"):
        out, run = sdxl(METHODS[method])
        assert (out - base).abs().max() > 1e-3 and run.rewritten, method
    names = {i.name for i in run.patch.layers.values()}
    assert "down_blocks.2.attentions.0.transformer_blocks.1.attn1" in names  # depth 2 at the deepest level
    assert not any(n.startswith("down_blocks.0") for n in names)  # no attention at the top level


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                       "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler"])
def test_sag_and_a_rewrite_run_with_any_scheduler_and_guidance_rescale(sd15_pipe, scheduler):
    import diffusers

    original = sd15_pipe.scheduler
    sd15_pipe.scheduler = du.sd_schedule(getattr(diffusers, scheduler))
    try:
        base = generate(sd15_pipe, steps=3, guidance_rescale=0.7)
        runs = []
        out = generate(sd15_pipe, {**METHODS["sag"], "slothful.enabled": True}, steps=3, guidance_rescale=0.7,
                       run_out=runs)
        assert (out - base).abs().max() > 1e-3 and runs[0].patch.recorder is None
        assert not any("SAG" in n for n in runs[0].notes), runs[0].notes  # guided at every step
        assert torch.equal(generate(sd15_pipe, steps=3, guidance_rescale=0.7), base)
    finally:
        sd15_pipe.scheduler = original


def test_img2img_with_sag_guides_only_the_steps_it_runs():
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**du.sd_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(4))  # latents: no VAE needed
    cond, uncond = du.embeds()
    extra_calls = []

    def img2img(settings=None):
        call = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, image=image, strength=0.5,
                    num_inference_steps=8, generator=torch.Generator().manual_seed(1), output_type="latent")
        with torch.no_grad():
            if settings is None:
                return pipe(**call).images
            with apply(pipe, settings) as run:
                out = pipe(**call).images
            extra_calls.append(run.extra_unet_calls)
            return out

    base = img2img()
    assert (img2img(METHODS["sag"]) - base).abs().max() > 1e-3
    assert extra_calls == [4]  # one SAG call per step actually run (8 x 0.5)


# ---- methods the adapter does not know -------------------------------------------------------
def test_a_registered_method_and_guidance_run_through_the_adapter(sd15_pipe, sd15_base):
    """The two example methods of tests/method_examples.py (defined outside the engine) reach the
    diffusers pipeline with no adapter edit: the per-layer one through the processors, the
    guidance one through the UNet hooks (its extra pass perturbs the middle block)."""
    from method_examples import ECHO, ECHO_ON, VSCALE

    from lib_sloth import methods

    with methods.registered(VSCALE), methods.registered(ECHO):
        for data, method in (({"vscale.enabled": True, "vscale.scale": 0.5}, VSCALE), (ECHO_ON, ECHO)):
            runs = []
            out = generate(sd15_pipe, data, run_out=runs)
            assert (out - sd15_base).abs().max() > 1e-3, method.name
            assert f"{method.infotext_key}: " in runs[0].infotext, runs[0].infotext
        assert runs[0].extra_unet_calls == 4 and runs[0].patch.extra_calls == {"echo": 4}  # one per step
