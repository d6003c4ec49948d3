"""The A1111 adapter against WebUI behaviour the first stand-in left out (issue 10, runtime items).

Each test names the real file (AUTOMATIC1111/stable-diffusion-webui v1.10.1 unless said otherwise)
and the function it mirrors; where the stand-in lacked that part it was extended from the same
source (see tests/standins/a1111/README.md).
"""
import pytest
import torch

from lib_sloth.patch import SlothPatch
from lib_sloth.settings import settings_from_dict
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
    torch.set_num_threads(1)
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
