"""Stand-in of Forge main's ``backend/sampling/sampling_function.py`` (commit dfdcbab6).

``calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options) -> (cond_pred,
uncond_pred)`` is ComfyUI 0.3.75's real batching (``comfy.samplers.calc_cond_batch`` over
``[cond, uncond]``): area/mask handling, concatenation of compatible conds, splitting under
memory pressure, ``transformer_options["cond_or_uncond"]`` / ``["sigmas"]`` per call and the call
``model_function_wrapper(model.apply_model, {"input", "timestep", "c", "cond_or_uncond"})`` — the
same algorithm Forge main's copy runs. A ``None`` uncond gives a zero uncond prediction, as in
Forge main. Not reproduced: the ``cond_mark`` / ``cond_indices`` / ``uncond_indices`` entries
Forge main adds to ``transformer_options`` (Sloth does not read them).

``sampling_function_inner`` follows Forge main's order, written for the tests: the CFG 1 shortcut
(``math.isclose(cond_scale, 1)`` and not ``disable_cfg1_optimization`` -> no uncond), the old-style
pre-CFG functions ``fn(model, cond, uncond, x, timestep, model_options)`` -> 6-tuple, the batch,
CFG (or ``sampler_cfg_function``), then every post-CFG function with exactly Forge main's keys
``denoised, cond, uncond, model, uncond_denoised, cond_denoised, sigma, model_options, input``
(``uncond`` is the list before the CFG 1 shortcut).
"""
import math

import comfy.samplers as _comfy_samplers


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    cond_pred, uncond_pred = _comfy_samplers.calc_cond_batch(model, [cond, uncond], x_in, timestep, model_options)
    return cond_pred, uncond_pred


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None,
                            return_full=False):
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)

    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options}
        result = x - model_options["sampler_cfg_function"](args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale

    for fn in model_options.get("sampler_post_cfg_function", []):
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                     "model_options": model_options, "input": x})
    if return_full:
        return result, cond_pred, uncond_pred
    return result
