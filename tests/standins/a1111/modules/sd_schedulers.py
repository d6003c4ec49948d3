"""Stand-in for A1111 v1.10.1 ``modules/sd_schedulers.py`` (written from the API, not the real code).

``Scheduler(name, label, function, default_rho=-1, need_inner_model=False, aliases=None)``
and ``schedulers``/``schedulers_map`` (keyed by name and label).  Only Automatic,
Uniform, Karras and Exponential are provided (the real list also has
Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM,
Beta).
"""
import dataclasses

import k_diffusion


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: any
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    return inner_model.get_sigmas(n).to(device)


schedulers = [
    Scheduler('automatic', 'Automatic', None),
    Scheduler('uniform', 'Uniform', uniform, need_inner_model=True),
    Scheduler('karras', 'Karras', k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler('exponential', 'Exponential', k_diffusion.sampling.get_sigmas_exponential),
]

schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
