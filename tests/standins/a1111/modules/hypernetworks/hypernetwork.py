"""Stand-in for A1111 v1.10.1 ``modules/hypernetworks/hypernetwork.py`` (written from the API, not the real code).

* ``HypernetworkModule(dim, ...)``: a per-token MLP with a residual, ``x + net(x) * multiplier``.
* ``Hypernetwork``: ``layers`` maps a context width to a pair ``(module_for_k, module_for_v)``;
  ``set_multiplier(m)`` sets every module's multiplier.
* ``apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None)``: looks the pair up
  by ``context_k.shape[2]``; none -> both unchanged (the same objects); else ``(k_module(context_k),
  v_module(context_v))``, recording them as ``layer.hyper_k`` / ``layer.hyper_v`` when a layer is given.
* ``apply_hypernetworks(hypernetworks, context, layer=None)`` starts from ``(context, context)``
  and applies each loaded hypernetwork in turn, K and V chains separately.

Simplified: no training, no saving/loading, no layer structure options (one hidden layer of
twice the width, ReLU); ``load_hypernetworks`` only takes ready ``Hypernetwork`` objects.
"""
import torch

from modules import shared


class HypernetworkModule(torch.nn.Module):
    def __init__(self, dim, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear1 = torch.nn.Linear(dim, dim * 2)
        self.linear2 = torch.nn.Linear(dim * 2, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.multiplier = 1.0

    def forward(self, x):
        return x + self.linear2(torch.relu(self.linear1(x))) * self.multiplier


class Hypernetwork:
    def __init__(self, name="hypernetwork", enable_sizes=(), seed=0):
        self.name = name
        self.layers = {size: (HypernetworkModule(size, seed), HypernetworkModule(size, seed + 1)) for size in enable_sizes}

    def set_multiplier(self, multiplier):
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self


def load_hypernetworks(networks, multipliers=None):
    shared.loaded_hypernetworks.clear()
    for i, network in enumerate(networks):
        network.set_multiplier(multipliers[i] if multipliers else 1.0)
        shared.loaded_hypernetworks.append(network)


def apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None):
    pair = (hypernetwork.layers if hypernetwork is not None else {}).get(context_k.shape[2], None)
    if pair is None:
        return context_k, context_v
    if layer is not None:
        layer.hyper_k, layer.hyper_v = pair
    return pair[0](context_k), pair[1](context_v)


def apply_hypernetworks(hypernetworks, context, layer=None):
    context_k = context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v
