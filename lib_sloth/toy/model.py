"""The toy model: the real ldm `UNetModel` in SD1.5's block layout, in pixel space, with a tiny
word-embedding "text encoder"; both live in one safetensors file under `models/`.

SD1.5 layout kept: four levels, num_res_blocks 2, SpatialTransformers (attn1 + attn2) at the
first three levels and in the middle block, cross-attention to a token context, eps-prediction
on SD's scaled-linear schedule (`sampling.sd_alphas_cumprod`). Only the sizes shrink, to what
two CPU cores train in under an hour: 32 x 32 RGB pixels in (level 0 is a 32 x 32 token grid),
32 base channels with channel_mult (1, 2, 2, 2), one head per attention layer (on a CPU the
softmax over 1024^2 scores per head dominates), a context of 8 tokens x 64 dims.

This is the one module of the package that imports `ldm` (the test/bench dependency
stable-diffusion-sdkit); nothing in the engine imports it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence, Tuple

import torch
from torch import nn

from .scenes import BACKGROUNDS, COLOURS, SHAPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(ROOT, "models", "toy-unet.safetensors")

CONTEXT_TOKENS = 8
VOCAB: Tuple[str, ...] = ("<pad>",) + COLOURS + SHAPES + ("left", "of", "above", "on") + BACKGROUNDS

UNET_CONFIG = dict(image_size=32, in_channels=3, out_channels=3, model_channels=32, num_res_blocks=2,
                   attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 2, 2], num_heads=1,
                   use_spatial_transformer=True, transformer_depth=1, context_dim=64, legacy=False)


def tokenize(prompts: Sequence[str]) -> torch.Tensor:
    """[B, 8] long: word ids padded with <pad>; the empty prompt "" (CFG's uncond) is all <pad>."""
    out = torch.zeros(len(prompts), CONTEXT_TOKENS, dtype=torch.long)
    for i, text in enumerate(prompts):
        unknown = [w for w in text.split() if w not in VOCAB]
        if unknown:
            raise ValueError(f"unknown words {unknown} in {text!r}; the vocabulary is {VOCAB[1:]}")
        ids = [VOCAB.index(w) for w in text.split()]
        if len(ids) > CONTEXT_TOKENS:
            raise ValueError(f"prompt longer than {CONTEXT_TOKENS} words: {text!r}")
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class TextEncoder(nn.Module):
    """Word + position embeddings, one layer norm: tokens [B, 8] -> context [B, 8, 64]."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.words = nn.Embedding(len(VOCAB), dim)
        self.positions = nn.Parameter(torch.zeros(CONTEXT_TOKENS, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.words(tokens) + self.positions)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return self(tokenize(prompts))


def build_unet() -> nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**UNET_CONFIG)


def build() -> Tuple[nn.Module, TextEncoder]:
    """A fresh (untrained) UNet and text encoder with the shipped architecture."""
    return build_unet(), TextEncoder(UNET_CONFIG["context_dim"])


def save(path: str, unet: nn.Module, text: TextEncoder, metadata: dict) -> None:
    """fp16 safetensors: UNet weights under `unet.`, the text encoder's under `text.`.

    The metadata is one key holding sorted JSON: safetensors writes several keys in an order that
    changes from process to process, and the file's sha256 must not (same run, same bytes)."""
    from safetensors.torch import save_file

    tensors = {f"unet.{k}": v.detach().half().contiguous() for k, v in unet.state_dict().items()}
    tensors.update({f"text.{k}": v.detach().half().contiguous() for k, v in text.state_dict().items()})
    meta = {"unet_config": UNET_CONFIG, "vocab": VOCAB, **metadata}
    save_file(tensors, path, metadata={"toy": json.dumps(meta, sort_keys=True)})


def load(path: str = WEIGHTS, dtype: torch.dtype = torch.float32) -> Tuple[nn.Module, TextEncoder]:
    """The shipped model in eval mode (fp32 by default: the CPU runs fp16 slowly)."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    unet, text = build()
    unet.load_state_dict({k[5:]: v.to(dtype) for k, v in tensors.items() if k.startswith("unet.")})
    text.load_state_dict({k[5:]: v.to(dtype) for k, v in tensors.items() if k.startswith("text.")})
    return unet.to(dtype).eval(), text.to(dtype).eval()


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
