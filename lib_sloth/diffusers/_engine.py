"""The adapter's one coupling to the engine: a SlothPatch driven by attention processors.

The engine plans and computes every self-attention call in `SlothPatch.attention_call` (the
guidances' recording and perturbation first, then the method table's planners, in plan order;
methods that need the transformer block's input and methods that stand down under token
merging are handled there). A diffusers UNet has no attention class forward to patch, so the
patch is built with the adapter's own layer index and `forwards=False`: it hooks the UNet (latent
size) and, when a method reads it, the transformer blocks (block input), and the Sloth processors
route each attn1 call to `attention_call` with a `LayerView` of the layer.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..patch import SlothPatch
from ..settings import SlothSettings
from .layers import layer_index


class LayerView:
    """A diffusers `Attention` as the engine's plans see a layer: to_q, to_k, to_v, heads and a
    callable to_out (diffusers keeps to_out as [Linear, Dropout]). Read through at every use, so
    adapters loaded while Sloth is on (PEFT swaps to_q...) are seen.

    It is equal to, and hashes as, its Attention: the patch keeps each call's block input under the
    transformer block's `attn1` (the Attention itself) and finds it again with the view.
    """

    def __init__(self, attn: nn.Module):
        self.attn = attn

    to_q = property(lambda self: self.attn.to_q)
    to_k = property(lambda self: self.attn.to_k)
    to_v = property(lambda self: self.attn.to_v)
    heads = property(lambda self: self.attn.heads)

    def to_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn.to_out[1](self.attn.to_out[0](x))

    def __hash__(self) -> int:
        return hash(self.attn)

    def __eq__(self, other) -> bool:
        return other is self or other is self.attn or (isinstance(other, LayerView) and other.attn is self.attn)


def _upcast(view: LayerView) -> bool:
    """The layer's own precision flag (SD2.x configs set upcast_attention); settings can force fp32."""
    return bool(getattr(view.attn, "upcast_attention", False))


def engine_patch(unet: nn.Module, settings: SlothSettings, seed: int, recorder=None) -> SlothPatch:
    """The pass's SlothPatch over `unet`, its layer index keyed by one LayerView per attn1.
    Enter it for the block's lifetime; `views(patch)` maps each attn1 to its view."""
    return SlothPatch(unet, settings, seed, upcast_for=_upcast, recorder=recorder,
                      layers=layer_index(unet, key=LayerView), forwards=False)


def views(patch: SlothPatch) -> Dict[nn.Module, LayerView]:
    """attn1 module -> the view the patch's index knows it by."""
    return {view.attn: view for view in patch.layers}
