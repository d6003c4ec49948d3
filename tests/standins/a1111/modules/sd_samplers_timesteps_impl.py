"""Stand-in for A1111 v1.10.1 ``modules/sd_samplers_timesteps_impl.py`` (written from the API, not the real code).

``ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0)``:
``alphas_cumprod`` is read from ``model.inner_model.inner_model`` (CFG denoiser ->
``CompVisTimestepsDenoiser`` -> LatentDiffusion); the loop walks ``timesteps`` from
the end, calls the CFG denoiser with ``timesteps[index] * ones(batch)`` (it returns
epsilon), forms ``pred_x0`` and steps to the previous alpha; the noise term uses
``k_diffusion.sampling.torch.randn_like`` (the ``TorchHijack``); ``callback`` gets
``{'x', 'i', 'sigma': 0, 'sigma_hat': 0, 'denoised': pred_x0}`` after each step.
Note the loop makes ``len(timesteps) - 1`` model calls while ``launch_sampling``
announces ``p.steps`` (txt2img) or ``t_enc + 1`` (img2img), as in the WebUI.
Only DDIM is provided.
"""
import numpy as np
import torch
import tqdm

import k_diffusion.sampling


def _float64(t):
    return torch.float32 if t.device.type in ('mps', 'xpu') else torch.float64


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(_float64(x))
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.cpu().numpy()) / (1 - alphas.cpu()) * (1 - alphas.cpu() / alphas_prev.cpu().numpy()))

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones((x.shape[0]))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in tqdm.trange(len(timesteps) - 1, disable=disable):
        index = len(timesteps) - 1 - i

        e_t = model(x, timesteps[index].item() * s_in, **extra_args)

        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
        noise = sigma_t * k_diffusion.sampling.torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise

        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': 0, 'sigma_hat': 0, 'denoised': pred_x0})

    return x
