"""Stand-in for A1111 v1.10.1 ``modules/sd_samplers_extra.py`` (written from the API, not the real code).

``restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1., restart_list=None)``
(Restart Sampling, Xu et al. 2023), the step list as the WebUI builds it:

* ``steps = len(sigmas) - 1``; with ``restart_list`` None and ``steps >= 20`` it restarts
  ``restart_times`` = 1 time over ``restart_steps`` = 9 steps (``steps >= 36``: 2 times over
  ``steps // 4``), re-spaces the main schedule as Karras over ``steps - restart_steps * restart_times``
  steps between ``sigmas[-2]`` and ``sigmas[0]``, and restarts from sigma 2 back down to the main
  step nearest sigma 0.1 (``{0.1: [restart_steps + 1, restart_times, 2]}``); below 20 steps none;
* the restart segment is a Karras schedule of ``restart_steps + 1`` between those two sigmas without
  its trailing zero, walked ``restart_times`` times right after that main step;
* each listed step is a Heun step (Euler when the target is 0) with one ``callback`` whose ``'i'``
  counts every listed step; going up in sigma adds fresh noise first.
"""
import torch

import k_diffusion.sampling
from k_diffusion.sampling import get_sigmas_karras, to_d


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1., restart_list=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device)
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    at = {int(torch.argmin((sigmas - key).abs())): value for key, value in restart_list.items()}

    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at:
            n, times, sigma_top = at[i + 1]
            low, high = i + 1, int(torch.argmin((sigmas - sigma_top).abs()))
            if high < low:
                segment = get_sigmas_karras(n, sigmas[low].item(), sigmas[high].item(), device=sigmas.device)[:-1]
                pairs.extend(list(zip(segment[:-1], segment[1:])) * times)

    previous = None
    for step, (sigma, sigma_next) in enumerate(pairs):
        if previous is not None and previous < sigma:
            x = x + k_diffusion.sampling.torch.randn_like(x) * s_noise * (sigma ** 2 - previous ** 2) ** 0.5
        denoised = model(x, sigma * s_in, **extra_args)
        d = to_d(x, sigma, denoised)
        if callback is not None:
            callback({'x': x, 'i': step, 'sigma': sigma_next, 'sigma_hat': sigma, 'denoised': denoised})
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
        else:
            x_2 = x + d * (sigma_next - sigma)
            d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next * s_in, **extra_args))
            x = x + (d + d_2) / 2 * (sigma_next - sigma)
        previous = sigma_next
    return x
