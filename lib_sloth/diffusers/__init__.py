"""Sloth on diffusers: every method on a `UNet2DConditionModel` pipeline, any scheduler.

    from lib_sloth import diffusers as sloth
    with sloth.apply(pipe, "speed", seed=1) as run:
        image = pipe(prompt, num_inference_steps=20).images[0]
    image.info["parameters"] = run.infotext

The only package of lib_sloth that imports diffusers (tests/test_imports.py). Modules:
``run`` (the `with` block), ``processor`` (the attn1 attention processor), ``layers`` (the
layer index), ``clock`` (the schedule step from the scheduler), ``guidance`` (SAG around the
UNet call) and ``_engine`` (the one coupling to the engine's call API).
"""
from .run import SlothRun, apply, infotext_string, resolve_settings

__all__ = ["apply", "SlothRun", "resolve_settings", "infotext_string"]
