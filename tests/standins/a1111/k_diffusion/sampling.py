"""Stand-in for ``k_diffusion/sampling.py`` (DPM++ 2M, Euler, Euler ancestral, Heun, two schedules).

Faithful to the pinned commit in the details that matter to the WebUI:
``sample_euler`` draws ``torch.randn_like(x)`` on *every* step (A1111 swaps this
module's ``torch`` for its ``TorchHijack`` so the draw consumes ``p.rng``), calls
the model once per step with ``sigma_hat * s_in`` (one sigma per row), and calls
``callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'})`` *before* updating ``x``.
``sample_heun`` calls the model twice per step except on the last one.
"""
import math

import torch
from tqdm.auto import trange

from . import utils


def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
    ramp = torch.linspace(0, 1, n)
    lo = sigma_min ** (1 / rho)
    hi = sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).to(device)


def get_sigmas_exponential(n, sigma_min, sigma_max, device='cpu'):
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def to_d(x, sigma, denoised):
    return (x - denoised) / utils.append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from, sigma_to, eta=1.):
    if not eta:
        return sigma_to, 0.
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x):
    return lambda sigma, sigma_next: torch.randn_like(x)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.
        eps = torch.randn_like(x) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigma_hat, 'denoised': denoised})
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1., noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.
        eps = torch.randn_like(x) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigma_hat, 'denoised': denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None

    def t_of(sigma):
        return sigma.log().neg()

    def sigma_of(t):
        return t.neg().exp()

    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_of(sigmas[i - 1])) / h
            blended = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * blended
        old_denoised = denoised
    return x


# ---- DPM fast / DPM adaptive: the WebUI-visible contract, not k-diffusion's DPM-Solver maths ------
# k-diffusion `sample_dpm_fast(model, x, sigma_min, sigma_max, n, ...)` spends n model evaluations
# on floor(n / 3) + 1 steps evenly spaced in t = -log(sigma) (orders 3, ..., with the remainder last)
# and calls `callback` once per step with 'i' the step and 'sigma' that step's start;
# `sample_dpm_adaptive(model, x, sigma_min, sigma_max, ...)` chooses its steps by error control
# (a rejected step is retried smaller) and calls `callback` after every attempt with 'i' the number
# of attempts so far minus one and 'sigma' where it stands. Neither takes `sigmas`. The stand-ins
# below keep exactly that contract with a simpler integrator (Euler sub-steps; Euler/Heun error).
def _sigma_of_t(t):
    return t.neg().exp()


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0., s_noise=1., noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    m = n // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    ts = torch.linspace(t_start, t_end, m + 1)
    for i in trange(len(orders), disable=disable):
        order = orders[i]
        sub = torch.linspace(float(ts[i]), float(ts[i + 1]), order + 1)
        for j in range(order):
            sigma, sigma_next = _sigma_of_t(sub[j]), _sigma_of_t(sub[j + 1])
            denoised = model(x, sigma * s_in, **extra_args)
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
        if callback is not None:
            callback({'x': x, 'i': i, 't': ts[i], 't_up': ts[i], 'sigma': _sigma_of_t(ts[i]), 'sigma_hat': _sigma_of_t(ts[i]), 'denoised': denoised})
    return x


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, disable=None, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0., icoeff=1., dcoeff=0., accept_safety=0.81, eta=0., s_noise=1., noise_sampler=None, return_info=False):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    s, t_end = torch.tensor(-math.log(sigma_max)), torch.tensor(-math.log(sigma_min))
    h = torch.tensor(h_init)
    attempts = 0
    while s < t_end - 1e-5:
        t = torch.minimum(t_end, s + h)
        sigma, sigma_next = _sigma_of_t(s), _sigma_of_t(t)
        denoised = model(x, sigma * s_in, **extra_args)
        d = to_d(x, sigma, denoised)
        x_low = x + d * (sigma_next - sigma)
        d_2 = to_d(x_low, sigma_next, model(x_low, sigma_next * s_in, **extra_args))
        x_high = x + (d + d_2) / 2 * (sigma_next - sigma)
        error = ((x_high - x_low).abs() / (atol + rtol * x_high.abs())).pow(2).mean().sqrt()
        if error <= 1 / accept_safety:
            x, s = x_high, t
        h = h * float(min(max(0.9 * float(error.clamp_min(1e-8)) ** -0.5, 0.2), 5.0))
        attempts += 1
        if callback is not None:
            callback({'x': x, 'i': attempts - 1, 't': s, 't_up': s, 'sigma': _sigma_of_t(s), 'sigma_hat': _sigma_of_t(s), 'denoised': denoised, 'error': error, 'h': h})
    return x
