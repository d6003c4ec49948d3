"""Stand-in for Forge's ``modules_forge/forge_sampler.py`` (lllyasviel/stable-diffusion-webui-forge,
tag ``previous``): the bridge from A1111's CFG denoiser to ``ldm_patched``'s ``sampling_function``.

Two pieces:

* ``cond_from_a1111_to_patched_ldm(cond)`` — A1111 conditioning (a ``[B, T, C]`` tensor, or for
  SDXL a dict with ``crossattn`` ``[B, T, 2048]`` and ``vector`` ``[B, 2816]``) → the one-element
  cond list ``[{"model_conds": {"c_crossattn": CONDCrossAttn, ["y": CONDRegular]}, ...}]`` that
  ``calc_cond_uncond_batch`` consumes.
* ``forge_sampling_function(...)`` — old Forge's ``ldm_patched.modules.samplers.sampling_function``
  behaviour, obtained by *delegating to the real* ``comfy.samplers.sampling_function`` and adding
  what Forge's copy does on top:

  1. ``model_options["sampler_pre_cfg_function"]`` (old 6-tuple form) runs before the UNet calls,
     after the CFG-1 shortcut has dropped ``uncond``;
  2. every UNet call's ``transformer_options`` also carries ``cond_mark`` (a float tensor with one
     0/1 entry per batch row), ``cond_indices`` and ``uncond_indices`` (row index lists).
     Injected through a ``model_function_wrapper`` that chains to any wrapper the patcher has.

  Not reproduced: the AND-prompt ``edit_strength`` factor (every cond made here has strength 1);
  and after a pre-cfg function, post-cfg functions see the uncond list it returned (Forge passes
  them the original one).

``forge_sample(unet, x, sigma, text_cond, text_uncond, cond_scale, seed)`` follows
``forge_sample``'s order: convert conds, attach ``c_concat`` if an image conditioning of matching
shape is given, run ``conditioning_modifiers``, then sample.
"""

import math

import torch

from ldm_patched.modules import samplers as _samplers
from ldm_patched.modules.conds import CONDCrossAttn, CONDRegular

__all__ = [
    "cond_from_a1111_to_patched_ldm",
    "forge_sampling_function",
    "forge_sample",
]


def cond_from_a1111_to_patched_ldm(cond):
    """A1111 conditioning → ``[dict(model_conds=..., cross_attn=..., [pooled_output=...])]``."""
    if isinstance(cond, torch.Tensor):
        return [dict(cross_attn=cond, model_conds=dict(c_crossattn=CONDCrossAttn(cond)))]
    crossattn, vector = cond["crossattn"], cond["vector"]
    return [
        dict(
            cross_attn=crossattn,
            pooled_output=vector,
            model_conds=dict(c_crossattn=CONDCrossAttn(crossattn), y=CONDRegular(vector)),
        )
    ]


def _row_labels(cond_or_uncond, rows_per_chunk):
    """Per-row 0 (cond) / 1 (uncond) labels for a batch built from ``cond_or_uncond`` chunks."""
    labels = []
    for kind in cond_or_uncond:
        labels.extend([kind] * rows_per_chunk)
    return labels


def _with_forge_row_marks(model_options):
    """A shallow copy of ``model_options`` whose UNet calls also get Forge's row bookkeeping."""
    inner = model_options.get("model_function_wrapper")

    def add_row_marks(apply_model, args):
        options = args["c"]["transformer_options"]
        sigmas = options["sigmas"]
        labels = _row_labels(args["cond_or_uncond"], int(sigmas.shape[0]))
        options["cond_mark"] = torch.tensor(labels, dtype=sigmas.dtype, device=sigmas.device)
        options["cond_indices"] = [i for i, kind in enumerate(labels) if kind == 0]
        options["uncond_indices"] = [i for i, kind in enumerate(labels) if kind == 1]
        if inner is not None:
            return inner(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    options = dict(model_options)
    options["model_function_wrapper"] = add_row_marks
    return options


def forge_sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None):
    """Denoised x0 ``[B, C, H, W]`` the way old Forge computes it (see module docstring).

    ``model`` is the ``BaseModel`` (``patcher.model``), ``timestep`` the per-row sigma ``[B]``.
    """
    model_options = {} if model_options is None else model_options
    pre_cfg = model_options.get("sampler_pre_cfg_function", [])
    if pre_cfg:
        cfg1_shortcut = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        uncond_in = None if cfg1_shortcut else uncond
        for fn in pre_cfg:
            model, cond, uncond_in, x, timestep, model_options = fn(model, cond, uncond_in, x, timestep, model_options)
        uncond = uncond_in
    return _samplers.sampling_function(
        model, x, timestep, uncond, cond, cond_scale, _with_forge_row_marks(model_options), seed
    )


def forge_sample(unet, x, sigma, text_cond, text_uncond, cond_scale, seed=None, image_cond=None):
    """One CFG denoiser call as Forge's ``forge_sample`` makes it; returns x0 ``[B, C, H, W]``.

    ``unet`` is the (Unet)ModelPatcher, ``sigma`` the per-row sigma ``[B]``, ``text_cond`` /
    ``text_uncond`` A1111 conditioning for the B rows.
    """
    model = unet.model
    uncond = cond_from_a1111_to_patched_ldm(text_uncond)
    cond = cond_from_a1111_to_patched_ldm(text_cond)
    model_options = unet.model_options

    concat = getattr(unet, "extra_concat_condition", None)
    if concat is None:
        concat = image_cond
    if isinstance(concat, torch.Tensor) and concat.shape[0] == x.shape[0] and concat.shape[2:] == x.shape[2:]:
        for entry in cond + uncond:
            entry["model_conds"]["c_concat"] = CONDRegular(concat)

    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, sigma, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, sigma, uncond, cond, cond_scale, model_options, seed
        )
    return forge_sampling_function(model, x, sigma, uncond, cond, cond_scale, model_options, seed)
