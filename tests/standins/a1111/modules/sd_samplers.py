"""Stand-in for A1111 v1.10.1 ``modules/sd_samplers.py`` (written from the API, not the real code).

``all_samplers``/``all_samplers_map``/``samplers``/``samplers_for_img2img``/
``samplers_map`` (lower-cased names and aliases), ``find_sampler_config``,
``create_sampler(name, model)`` (sets ``sampler.config``), ``visible_sampler_names``,
``get_sampler_and_scheduler`` and ``fix_p_invalid_sampler_and_scheduler`` behave as
in the WebUI over the reduced sampler list (DPM++ 2M, Euler a, Euler, Heun, DDIM).
"""
from __future__ import annotations

import functools

from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps, sd_schedulers, shared

all_samplers = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
    *sd_samplers_timesteps.samplers_data_timesteps,
]
all_samplers_map = {x.name: x for x in all_samplers}

samplers: list[sd_samplers_common.SamplerData] = []
samplers_for_img2img: list[sd_samplers_common.SamplerData] = []
samplers_map = {}
samplers_hidden = set()


def find_sampler_config(name):
    if name is not None:
        return all_samplers_map.get(name, None)
    return all_samplers[0]


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f'bad sampler name: {name}'
    if model.is_sdxl and config.options.get("no_sdxl", False):
        raise Exception(f"Sampler {config.name} is not supported for SDXL")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def set_samplers():
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = all_samplers
    samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names():
    return [x.name for x in samplers if x.name not in samplers_hidden]


def visible_samplers():
    return [x for x in samplers if x.name not in samplers_hidden]


@functools.cache
def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    default_sampler = samplers[0]
    found_scheduler = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
    name = sampler_name or default_sampler.name

    for scheduler in sd_schedulers.schedulers:
        for option in [scheduler.label, scheduler.name, *(scheduler.aliases or [])]:
            if name.endswith(" " + option):
                found_scheduler = scheduler
                name = name[0:-(len(option) + 1)]
                break

    sampler = all_samplers_map.get(name, default_sampler)
    if convert_automatic and sampler.options.get('scheduler', None) == found_scheduler.name:
        found_scheduler = sd_schedulers.schedulers[0]
    return sampler.name, found_scheduler.label


def get_sampler_from_infotext(d: dict):
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict):
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def fix_p_invalid_sampler_and_scheduler(p):
    p.sampler_name, p.scheduler = get_sampler_and_scheduler(p.sampler_name, p.scheduler, convert_automatic=False)


set_samplers()
