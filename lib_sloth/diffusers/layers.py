"""The self-attention layers of a diffusers `UNet2DConditionModel`, as the engine's `LayerIndex`.

Every attn1 of a transformer block in down_blocks / mid_block / up_blocks gets the `LayerInfo`
its ldm twin has: block "input" / "middle" / "output" and its order within that group. The
orders agree because diffusers' down_blocks[i].attentions[j].transformer_blocks[k] is ldm's
input_blocks' (level i, res block j, depth k) in the same sequence (tests/test_diffusers_layers.py
checks it against the converted ldm UNet). Level 0 is the shallowest level with self-attention,
counted by the down blocks' downsamplers (SD1.x: 1/8 of the image, SDXL: 1/16).
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from ..layers import LayerIndex, LayerInfo

GROUPS = {"down_blocks": "input", "mid_block": "middle", "up_blocks": "output"}


def group_of(name: str):
    """"input" / "middle" / "output" for a module path of the UNet, or None outside them."""
    return next((GROUPS[part] for part in name.split(".") if part in GROUPS), None)


def _is_self_attention(block: nn.Module) -> bool:
    attn1 = getattr(block, "attn1", None)
    return (isinstance(attn1, nn.Module) and hasattr(attn1, "to_q") and not getattr(block, "only_cross_attention", False)
            and not getattr(attn1, "is_cross_attention", False))


def find_self_attention(unet: nn.Module) -> Dict[nn.Module, LayerInfo]:
    """attn1 module -> LayerInfo, in the UNet's module order."""
    layers: Dict[nn.Module, LayerInfo] = {}
    counts: Dict[str, int] = {}
    for name, module in unet.named_modules():
        group = group_of(name)
        if group is None or not _is_self_attention(module):
            continue
        layers[module.attn1] = LayerInfo(f"{name}.attn1", group, counts.get(group, 0))
        counts[group] = counts.get(group, 0) + 1
    return layers


def shallowest_attention_downsample(unet: nn.Module) -> int:
    """Downsample factor of the shallowest down block with self-attention (SD1.x: 1, SDXL: 2)."""
    factor = 1
    for block in getattr(unet, "down_blocks", ()):
        if any(_is_self_attention(m) for m in block.modules()):
            return factor
        if getattr(block, "downsamplers", None):
            factor *= 2
    return 1


def layer_index(unet: nn.Module, key=None) -> LayerIndex:
    """The engine's index of `unet`'s attn1 layers, each keyed by key(attn1) (default: itself)."""
    layers = find_self_attention(unet)
    owners = [m for m in unet.modules() if getattr(m, "attn1", None) in layers]
    table = {(key or _same)(attn): info for attn, info in layers.items()}
    return LayerIndex.from_table(table, owners, shallowest_attention_downsample(unet))


def _same(attn):
    return attn
