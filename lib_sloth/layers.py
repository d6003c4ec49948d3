"""Which layers of a UNet are self-attention, and how deep each call's tokens sit.

`LayerIndex` walks the UNet once (per patch) and answers, per attention call, "which layer is
this" and "which token grid and level do its tokens form". `unet` is the diffusion model
itself, or any module wrapping it: only the block-group names on the module paths are read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from torch import nn

from .geometry import grid_for_tokens
from .layer_call import TokenGrid

_BLOCKS = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


@dataclass(frozen=True)
class LayerInfo:
    name: str  # module path in the UNet, e.g. "middle_block.1.transformer_blocks.0.attn1"
    block: str  # "input", "middle" or "output"
    index: int  # order of this attn1 within its block group


def block_of(name: str) -> Optional[str]:
    """"input" / "middle" / "output" for a module path, or None outside the three block groups."""
    # the first block-group name on the path, so a UNet wrapped in another module still works
    return next((_BLOCKS[part] for part in name.split(".") if part in _BLOCKS), None)


def find_self_attention(unet: nn.Module) -> Dict[nn.Module, LayerInfo]:
    """Every attn1 of a transformer block whose attn1 really is self-attention."""
    layers: Dict[nn.Module, LayerInfo] = {}
    counts: Dict[str, int] = {}
    for name, module in unet.named_modules():
        attn1 = getattr(module, "attn1", None)
        if not isinstance(attn1, nn.Module) or not hasattr(attn1, "to_q"):
            continue
        if getattr(module, "disable_self_attn", False):
            continue
        block = block_of(name)
        if block is None:
            continue
        layers[attn1] = LayerInfo(f"{name}.attn1", block, counts.get(block, 0))
        counts[block] = counts.get(block, 0) + 1
    return layers


def shallowest_attention_downsample(unet: nn.Module) -> int:
    """Downsample factor of the shallowest level that has self-attention (SD1.x: 1, SDXL: 2).

    Walks the input blocks in order, doubling at each Downsample module, so it needs no
    knowledge of channel counts or heads.
    """
    factor = 1
    for name, module in unet.named_modules():
        if block_of(name) != "input":
            continue
        if type(module).__name__ == "Downsample":
            factor *= 2
        elif getattr(module, "attn1", None) is not None and not getattr(module, "disable_self_attn", False):
            return factor
    return 1


class LayerIndex:
    """The self-attention layers of one UNet and their level arithmetic, built once."""

    def __init__(self, unet: nn.Module):
        self.layers: Dict[nn.Module, LayerInfo] = find_self_attention(unet)
        # the transformer blocks that own those attn1 layers (tomesd swaps their class)
        self.owners: List[nn.Module] = [m for m in unet.modules() if getattr(m, "attn1", None) in self.layers]
        self._base_log2 = int(math.log2(shallowest_attention_downsample(unet)))

    @classmethod
    def from_table(cls, layers: Dict[nn.Module, LayerInfo], owners: List[nn.Module], base_downsample: int
                   ) -> "LayerIndex":
        """An index of a UNet whose module paths are not ldm's (diffusers): its attn1 table, their
        transformer blocks, and the downsample factor of its shallowest self-attention level."""
        index = cls.__new__(cls)
        index.layers, index.owners = dict(layers), list(owners)
        index._base_log2 = int(math.log2(base_downsample))
        return index

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def get(self, module: nn.Module) -> Optional[LayerInfo]:
        return self.layers.get(module)

    def grid(self, tokens: int, latent_hw: Tuple[int, int]) -> Optional[TokenGrid]:
        """The grid and level of a call with `tokens` tokens in a UNet call on a latent of `latent_hw`;
        None when the tokens match no grid (something upstream merged or cropped them)."""
        found = grid_for_tokens(tokens, latent_hw)
        if found is None:
            return None
        h, w, downsample = found
        return TokenGrid(h, w, max(0, int(math.log2(downsample)) - self._base_log2))
