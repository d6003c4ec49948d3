"""A Sloth job in the A1111 stand-in, for the tests and scripts that run one through the real Script.

``start_webui(model)`` starts the stand-in WebUI with this extension loaded; ``make_job(settings, ...)``
builds the txt2img (or img2img) processing object with the Sloth script's args for ``settings``;
the caller runs it with ``standin.run(p)``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the extension's folder
STANDIN_ROOT = os.path.join(ROOT, "tests", "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

import torch  # noqa: E402

import standin  # noqa: E402
from lib_sloth.webui import args as script_args  # noqa: E402
from modules import scripts  # noqa: E402


def start_webui(model) -> None:
    """A fresh stand-in WebUI on ``model`` with this extension's scripts loaded and both tabs' UI built."""
    standin.reset()
    standin.use_model(model)
    standin.load_scripts([ROOT])
    standin.start_ui()


def make_job(settings, enabled=True, *, img2img=False, size=256, steps=4, sampler="Euler", prompt="a cat", seed=1234,
             **kwargs):
    """The stand-in's job for ``settings`` (Sloth on or off), not run yet; img2img gets a seeded init latent."""
    runner = scripts.scripts_img2img if img2img else scripts.scripts_txt2img
    args = standin.script_args_for(runner, "Sloth", script_args.to_args(settings, enabled))
    make = standin.img2img if img2img else standin.txt2img
    p = make(script_args=args, prompt=prompt, width=size, height=size, **kwargs)
    p.steps, p.sampler_name, p.seed = steps, sampler, seed
    if img2img:
        g = torch.Generator().manual_seed(5)
        p.init_latent = torch.randn(p.batch_size, 4, size // 8, size // 8, generator=g)
    return p
