""""Show Sloth maps" end to end: the checkbox, the info text, the extra gallery images, on the
A1111 1.10.1 stand-in (real Script, real A1111 adapter) and on the Forge harness (real ldm_patched
sampling through the Forge adapter, with the Script's hooks).

Off: the images and the info text are those of a job without the switch, and no recorder is
made. On: the generated images are unchanged and the maps follow them, in the documented order,
with the documented sizes and captions.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from a1111_jobs import make_job, start_webui
from lib_sloth.webui.job import job_of, new_job
from lib_sloth import infotext, maps
from lib_sloth.settings import settings_from_dict
from lib_sloth import draw_maps
from lib_sloth.webui import a1111, hooks
from lib_sloth.webui import args as script_args
from unets import sd15_unet

import standin  # the A1111 stand-in, on sys.path through a1111_jobs
import standin_sd_model
from modules import infotext_utils, scripts, shared

SLOTHFUL_SAG = {"slothful.enabled": True, "sag.enabled": True, "sag.scale": 1.0}
NSA = {"nearsighted.enabled": True, "nearsighted.base_tile_size": 16, "nearsighted.peak_tile_size": 20}


def expected_kinds(settings, recorder):
    """The captions' map names render() must produce, in order."""
    kinds = []
    if settings.sag.enabled:
        kinds.append("Sloth SAG map")
    kinds += [f"Sloth {'Near-sighted Attention' if settings.nearsighted.enabled else 'Near-sighted Tile'} tiles"
              ] * len(recorder.tiled_levels())
    if any(getattr(settings, m).enabled for m in ("slothful", "tile", "nearsighted", "agentsd")):
        kinds.append("Sloth K/V budget")
    return kinds


def check_maps(drawn, recorder, settings, final_size, label):
    """Kinds, order, sizes and captions of the appended maps."""
    assert [m.caption.split(" - ")[0] for m in drawn] == expected_kinds(settings, recorder)
    panel = draw_maps.panel_size(final_size)
    for m in drawn:
        assert label in m.caption and m.image.info[draw_maps.INFO_KEY] == m.caption
        if m.caption.startswith("Sloth SAG"):
            n = len(recorder.overlay_records("sag"))
            assert n == 3 and m.image.size == (n * panel[0] + (n - 1) * draw_maps.GAP, panel[1] + draw_maps.HEADER)
        elif "tiles" in m.caption:
            assert m.image.height == panel[1] + draw_maps.HEADER
        else:
            w, h = draw_maps.CHART_SIZE
            assert m.image.size == (48 + w + 16 + draw_maps.LEGEND_W, 12 + h + 30 + draw_maps.HEADER)


# ---- A1111 ---------------------------------------------------------------------------------------
class Capturing(a1111.A1111Backend):
    def __init__(self):
        self.recorders = []

    def attach(self, p, settings, seed):
        self.recorders.append(job_of(p).recorder)
        return super().attach(p, settings, seed)


@pytest.fixture(scope="module")
def webui():
    start_webui(standin_sd_model.TinyLatentDiffusion(sd15_unet(context_dim=32), kind="sd1", context_dim=32, tokens=8))
    yield
    standin.reset()


@pytest.fixture
def backend(webui):
    captured = Capturing()
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        runner.script("Sloth").backend = captured
    return captured


def a1111_job(data, show, *, size=128, img2img=False, steps=4, **kwargs):
    settings = settings_from_dict({**data, "show_maps": show})
    return standin.run(make_job(settings, img2img=img2img, size=size, steps=steps, **kwargs)), settings


def pixels(images):
    return [np.asarray(im).tobytes() for im in images]


@pytest.mark.parametrize("case", ["txt2img", "img2img", "hires", "batch2", "tiles"])
def test_a1111_maps_follow_the_unchanged_images(backend, case, monkeypatch):
    data, kwargs, label = SLOTHFUL_SAG, {}, "txt2img"
    if case == "img2img":
        kwargs, label = {"img2img": True, "denoising_strength": 0.6}, "img2img"
    elif case == "hires":
        kwargs = {"size": 64, "enable_hr": True, "hr_scale": 2.0, "denoising_strength": 0.5, "hr_upscaler": "Latent",
                  "hr_second_pass_steps": 4}
        label = "hires pass"
    elif case == "batch2":
        kwargs, label = {"batch_size": 2}, "txt2img, first of 2 images"
    elif case == "tiles":
        data, kwargs = NSA, {"size": 256}
    made = []
    monkeypatch.setattr(hooks, "MapRecorder", lambda *a: made.append(maps.MapRecorder(*a)) or made[-1])
    off, _ = a1111_job(data, False, **kwargs)
    assert made == [] and all(r is None for r in backend.recorders)  # off: no recorder, nothing recorded
    on, settings = a1111_job(data, True, **kwargs)
    generated = len(off.images)
    assert generated == (2 if case == "batch2" else 1) + (1 if case == "batch2" and shared.opts.return_grid else 0)
    # the generated images are bit-identical; the maps come after them
    assert pixels(on.images[:generated]) == pixels(off.images)
    # the info text differs only by the switch's own key
    for text_on, text_off in zip(on.infotexts, off.infotexts):
        params_on = infotext_utils.parse_generation_parameters(text_on)
        params_off = infotext_utils.parse_generation_parameters(text_off)
        assert "Sloth maps" not in params_off and params_on.pop("Sloth maps") == "on"
        assert params_on == params_off
    passes = 2 if case == "hires" else 1
    assert len(made) == passes and backend.recorders[-passes:] == made
    recorder = made[-1]  # the last pass's maps are the ones shown
    drawn = [draw_maps.MapImage(im.info[draw_maps.INFO_KEY], im) for im in on.images[generated:]]
    final = on.images[on.index_of_first_image]
    check_maps(drawn, recorder, settings, final.size, label)
    if case == "hires":
        assert final.size == (128, 128) and recorder.latent_hw == (16, 16)
    if case == "tiles":
        assert recorder.tiled_levels() == [0]


def test_a1111_sag_overlay_is_the_mask_the_guidance_used(backend, monkeypatch):
    import lib_sloth.sag as sag_module

    used = []
    original = sag_module.degrade
    monkeypatch.setattr(sag_module, "degrade", lambda x0, mask, sigma: used.append(mask.clone()) or
                        original(x0, mask, sigma))
    made = []
    monkeypatch.setattr(hooks, "MapRecorder", lambda *a: made.append(maps.MapRecorder(*a)) or made[-1])
    processed, _ = a1111_job({"sag.enabled": True, "sag.scale": 1.0}, True, steps=3)
    records = made[-1].overlay_records("sag")
    assert [r.step for r in records] == [0, 1, 2]
    panel = draw_maps.panel_size(processed.images[0].size)
    for r, engine in zip(records, used):
        assert torch.equal(r.overlay.mask, engine[0, 0] > 0.5)
        up = F.interpolate(engine[:1].float(), size=(panel[1], panel[0]), mode="nearest")[0, 0].numpy() > 0.5
        assert np.array_equal(draw_maps.overlay_mask(r, panel), up)


def test_a1111_paste_restores_the_switch(backend):
    processed, settings = a1111_job({"slothful.enabled": True}, True, steps=2)
    params = infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert infotext.read(params)["show_maps"] is True
    off, _ = a1111_job({"slothful.enabled": True}, False, steps=2)
    assert infotext.read(infotext_utils.parse_generation_parameters(off.infotexts[0]))["show_maps"] is False


# ---- Forge / reForge (ldm_patched) -----------------------------------------------------------------
class StableDiffusionProcessingImg2Img(SimpleNamespace):
    """Named like Forge's class: the maps' captions tell img2img from txt2img by the class name."""


def forge_job(data, show, *, batch=1, hires=False, img2img=False, monkeypatch=None):
    """One job as Forge's processing.py runs it, with the Script's hooks around the real passes.

    The image of a latent is a fixed 8x nearest upscale of its first three channels (no VAE here).
    """
    import test_forge_backend as fb
    from lib_sloth.webui.forge import ForgeBackend

    patcher = forge_patcher()
    settings = settings_from_dict({**data, "show_maps": show})
    p = fb.make_p("sd15", patcher, batch)
    if img2img:
        p = StableDiffusionProcessingImg2Img(**vars(p))
    p.batch_size, p.n_iter, p.iteration, p.is_hr_pass, p.enable_hr = batch, 1, 0, False, hires
    hooks.prepare_job(p, script_args.to_args(settings), "/nonexistent/user_presets.json")

    def one_pass(x, steps):
        p.sampler = fb.Sampler()
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
        hooks.attach_pass(p, ForgeBackend())
        return p.sampler.sample(p, x, steps, 5.0)

    x = fh_latent(p, batch, (32, 32))
    out = one_pass(x, 3)
    if hires:
        p.is_hr_pass = True
        out = one_pass(F.interpolate(out, scale_factor=2, mode="nearest"), 3)
        p.is_hr_pass = False
    images = [to_image(z) for z in out]
    processed = SimpleNamespace(images=list(images), index_of_first_image=0)
    recorder = job_of(p).maps[1] if job_of(p).maps else None
    drawn = hooks.append_maps(p, processed)
    return processed, images, drawn, recorder, settings, p


_patcher = {}


def forge_patcher():
    import forge_harness as fh

    if "sd15" not in _patcher:
        _patcher["sd15"] = fh.build_patcher("sd15", seed=0)
    return _patcher["sd15"]


def fh_latent(p, batch, size):
    import forge_harness as fh

    return fh.initial_latent(p.sd_model.forge_objects.unet, batch=batch, size=size, sigma=1.0, seed=2)


def to_image(z):
    rgb = torch.tanh(z[:3]).add(1).mul(127.5).clamp(0, 255).byte()
    rgb = rgb.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("case", ["txt2img", "img2img", "hires", "batch2"])
def test_forge_maps_follow_the_unchanged_images(case, monkeypatch):
    kwargs = {"img2img": case == "img2img", "hires": case == "hires", "batch": 2 if case == "batch2" else 1}
    label = {"txt2img": "txt2img", "img2img": "img2img", "hires": "hires pass",
             "batch2": "txt2img, first of 2 images"}[case]
    made = []
    monkeypatch.setattr(hooks, "MapRecorder", lambda *a: made.append(maps.MapRecorder(*a)) or made[-1])
    off_processed, off_images, off_drawn, off_recorder, _, p_off = forge_job(SLOTHFUL_SAG, False, **kwargs)
    assert made == [] and off_drawn == [] and off_recorder is None and len(off_processed.images) == kwargs["batch"]
    assert "Sloth maps" not in p_off.extra_generation_params
    processed, images, drawn, recorder, settings, p_on = forge_job(SLOTHFUL_SAG, True, **kwargs)
    assert pixels(images) == pixels(off_images)  # bit-identical generated images
    assert p_on.extra_generation_params.pop("Sloth maps") == "on"
    assert p_on.extra_generation_params == p_off.extra_generation_params
    assert processed.images[len(images):] == [m.image for m in drawn]
    assert len(made) == (2 if case == "hires" else 1) and recorder is made[-1]
    check_maps(drawn, recorder, settings, images[0].size, label)
    assert recorder.latent_hw == ((64, 64) if case == "hires" else (32, 32))
