"""Stand-in for A1111 v1.10.1 ``modules/rng.py`` (written from the API, not the real code).

``ImageRNG(shape, seeds, ...)``: ``next()`` returns a ``(len(seeds), *shape)`` noise
batch; the first call draws each image's noise from its own seed, later calls
continue each image's generator (the real class does the same for the samplers'
``randn_like``).  Simplified: CPU ``torch.Generator`` only (no GPU/NV sources),
variation seeds (``subseeds``/``subseed_strength``) and seed resize are ignored.
"""
import torch

from modules import devices


def randn(seed, shape, generator=None):
    gen = generator if generator is not None else torch.Generator(devices.cpu).manual_seed(int(seed))
    return torch.randn(shape, generator=gen, device=devices.cpu)


def randn_local(seed, shape):
    return torch.randn(shape, generator=torch.Generator(devices.cpu).manual_seed(int(seed)), device=devices.cpu)


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.generators = [torch.Generator(devices.cpu).manual_seed(int(s)) for s in seeds]
        self.is_first = True

    def first(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators]).to(devices.device)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators]).to(devices.device)
