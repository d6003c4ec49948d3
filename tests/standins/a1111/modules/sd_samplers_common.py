"""Stand-in for A1111 v1.10.1 ``modules/sd_samplers_common.py`` (written from the API, not the real code).

Kept exactly:
* ``SamplerData(name, constructor, aliases, options)`` with ``total_steps`` doubling
  for ``second_order`` samplers;
* ``setup_img2img_steps(p, steps=None)`` -> ``(steps, t_enc)``: with
  ``opts.img2img_fix_steps`` or an explicit ``steps`` (hires pass) it returns
  ``int(requested / min(denoising_strength, 0.999))`` and ``requested - 1``,
  otherwise ``p.steps`` and ``int(min(denoising_strength, 0.999) * p.steps)``;
* ``Sampler``: ``callback_state`` sets ``state.sampling_step = d['i']`` (after each
  sampler step) and raises ``InterruptedException`` past ``stop_at``;
  ``launch_sampling(steps, func)`` sets ``model_wrap_cfg.steps``,
  ``model_wrap_cfg.total_steps = config.total_steps(steps)``,
  ``state.sampling_steps = steps``, ``state.sampling_step = 0`` and returns
  ``last_latent`` on interruption; ``initialize(p)`` resets ``model_wrap_cfg.step``
  to 0, wires ``p``/mask/``image_cfg_scale``, reads ``eta``/``s_min_uncond`` and
  swaps ``k_diffusion.sampling.torch`` for ``TorchHijack(p)``; ``add_infotext``.
* ``store_latent`` stores the preview latent in ``state.current_latent``.

``TorchHijack.randn_like`` falls back to ``torch.randn_like`` when ``p.rng`` is ``None``
(tests that drive a sampler without ``process_images``).

``apply_refiner(cfg_denoiser, sigma)``: the switch point from sigma (argmin over the inner model's
``sigmas``; timestep samplers' sigma is the timestep) or from the step count; then, past
``p.refiner_switch_at`` with a ``p.refiner_checkpoint_info`` that is not the loaded one (and the
hires-fix pass rules), ``sd_models.reload_model_weights(info=...)``, ``p.setup_conds()`` and
``cfg_denoiser.update_inner_model()``, returning True.

Simplified: VAE helpers call ``model.decode_first_stage`` /
``model.encode_first_stage`` of the test model; no Brownian noise sampler.
"""
import inspect
from collections import namedtuple

import torch

import k_diffusion.sampling
from modules import devices, sd_models, shared
from modules.shared import opts, state

SamplerDataTuple = namedtuple('SamplerData', ['name', 'constructor', 'aliases', 'options'])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def setup_img2img_steps(p, steps=None):
    if opts.img2img_fix_steps or steps is not None:
        requested_steps = (steps or p.steps)
        steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def samples_to_images_tensor(sample, approximation=None, model=None):
    model = model if model is not None else shared.sd_model
    with torch.no_grad():
        return model.decode_first_stage(sample)


def decode_first_stage(model, x):
    return samples_to_images_tensor(x.to(devices.dtype_vae), 0, model)


def images_tensor_to_samples(image, approximation=None, model=None):
    """``image`` in [0, 1] -> latent, through the test model's first stage."""
    model = model if model is not None else shared.sd_model
    image = image.to(shared.device, dtype=devices.dtype_vae) * 2 - 1
    return model.get_first_stage_encoding(model.encode_first_stage(image))


def store_latent(decoded):
    state.current_latent = decoded


class InterruptedException(BaseException):
    pass


def apply_refiner(cfg_denoiser, sigma=None):
    if opts.refiner_switch_by_sample_steps or sigma is None:
        completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
    else:
        try:
            timestep = torch.argmin(torch.abs(cfg_denoiser.inner_model.sigmas.to(sigma.device) - torch.max(sigma)))
        except AttributeError:  # timestep samplers: sigma already is the timestep
            timestep = torch.max(sigma).to(dtype=int)
        completed_ratio = (999 - timestep) / 1000

    refiner_switch_at = cfg_denoiser.p.refiner_switch_at
    refiner_checkpoint_info = cfg_denoiser.p.refiner_checkpoint_info
    if refiner_switch_at is not None and completed_ratio < refiner_switch_at:
        return False
    if refiner_checkpoint_info is None or shared.sd_model.sd_checkpoint_info == refiner_checkpoint_info:
        return False
    if getattr(cfg_denoiser.p, "enable_hr", False):
        is_second_pass = cfg_denoiser.p.is_hr_pass
        if opts.hires_fix_refiner_pass == "first pass" and is_second_pass:
            return False
        if opts.hires_fix_refiner_pass == "second pass" and not is_second_pass:
            return False
        if opts.hires_fix_refiner_pass != "second pass":
            cfg_denoiser.p.extra_generation_params['Hires refiner'] = opts.hires_fix_refiner_pass
    cfg_denoiser.p.extra_generation_params['Refiner'] = refiner_checkpoint_info.short_title
    cfg_denoiser.p.extra_generation_params['Refiner switch at'] = refiner_switch_at
    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=refiner_checkpoint_info)
    devices.torch_gc()
    cfg_denoiser.p.setup_conds()
    cfg_denoiser.update_inner_model()
    return True


class TorchHijack:
    """Replaces ``k_diffusion.sampling.torch`` so that ``torch.randn_like`` draws from ``p.rng``."""

    def __init__(self, p):
        self.rng = p.rng

    def __getattr__(self, item):
        if item == 'randn_like':
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def randn_like(self, x):
        if self.rng is None:
            return torch.randn_like(x)
        return self.rng.next()


class Sampler:
    def __init__(self, funcname):
        self.funcname = funcname
        self.func = funcname
        self.extra_params = []
        self.sampler_noises = None
        self.stop_at = None
        self.eta = None
        self.config: SamplerData = None
        self.last_latent = None
        self.s_min_uncond = None
        self.s_churn = 0.0
        self.s_tmin = 0.0
        self.s_tmax = float('inf')
        self.s_noise = 1.0

        self.eta_option_field = 'eta_ancestral'
        self.eta_infotext_field = 'Eta'
        self.eta_default = 1.0

        self.conditioning_key = getattr(shared.sd_model.model, 'conditioning_key', 'crossattn')

        self.p = None
        self.model_wrap_cfg = None
        self.sampler_extra_args = None
        self.options = {}

    def callback_state(self, d):
        step = d['i']
        if self.stop_at is not None and step > self.stop_at:
            raise InterruptedException
        state.sampling_step = step
        shared.total_tqdm.update()

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except RecursionError:
            return self.last_latent
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p):
        return p.steps

    def initialize(self, p) -> dict:
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = p.mask if hasattr(p, 'mask') else None
        self.model_wrap_cfg.nmask = p.nmask if hasattr(p, 'nmask') else None
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.image_cfg_scale = getattr(p, 'image_cfg_scale', None)
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, 's_min_uncond', 0.0)

        k_diffusion.sampling.torch = TorchHijack(p)

        params = inspect.signature(self.func).parameters
        extra = {}
        for name in self.extra_params:
            if hasattr(p, name) and name in params:
                extra[name] = getattr(p, name)

        if 'eta' in params:
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            extra['eta'] = self.eta

        if len(self.extra_params) > 0:
            s_churn = getattr(opts, 's_churn', p.s_churn)
            s_tmin = getattr(opts, 's_tmin', p.s_tmin)
            s_tmax = getattr(opts, 's_tmax', p.s_tmax) or self.s_tmax
            s_noise = getattr(opts, 's_noise', p.s_noise)
            for key, value, default, label in (('s_churn', s_churn, self.s_churn, 'Sigma churn'),
                                               ('s_tmin', s_tmin, self.s_tmin, 'Sigma tmin'),
                                               ('s_tmax', s_tmax, self.s_tmax, 'Sigma tmax'),
                                               ('s_noise', s_noise, self.s_noise, 'Sigma noise')):
                if key in extra and value != default:
                    extra[key] = value
                    setattr(p, key, value)
                    p.extra_generation_params[label] = value

        return extra

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError()

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError()

    def add_infotext(self, p):
        if self.model_wrap_cfg.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        if self.model_wrap_cfg.padded_cond_uncond_v0:
            p.extra_generation_params["Pad conds v0"] = True
