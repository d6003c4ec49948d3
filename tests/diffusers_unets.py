"""Tiny diffusers UNets and pipelines with random weights (test-only; needs the pinned diffusers).

The layouts mirror tests/unets.py's ldm builders (SD1.x: attention at 3 levels + middle; SDXL:
none at the top level, linear projections, added time ids), small enough for a CPU test. Every
layer is re-initialised from a seed, so no zero-initialised layer hides an attention change.
No text encoder or tokenizer: the pipelines are fed prompt embeddings (and pooled embeddings).
"""
from __future__ import annotations

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)

from unets import randomise

CONTEXT = 32  # cross-attention width of the tiny UNets (SD1.x: 768)
# Settings under which each method changes a 32 x 32 latent (tiles of 16 cells: several tiles per
# level), shared by the adapter and the parity tests; SAG with a lower threshold blurs more cells
METHODS = {
    "slothful": {"slothful.enabled": True},
    "tile": {"tile.enabled": True, "tile.tile_size": 16},
    "nearsighted": {"nearsighted.enabled": True, "nearsighted.base_tile_size": 16,
                    "nearsighted.peak_tile_size": 16},
    "agentsd": {"agentsd.enabled": True},
    "sag": {"sag.enabled": True, "sag.scale": 1.0, "sag.threshold": 0.5},
}
POOLED = 32  # SDXL-like pooled text embedding width
TIME_DIM = 8  # SDXL-like addition_time_embed_dim


def sd15_config(cross_attention_dim: int = CONTEXT) -> dict:
    """The diffusers twin of tests/unets.sd15_unet (model_channels 32, channel_mult 1,2,4,4, 8 heads)."""
    return dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64, 128, 128),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=cross_attention_dim, attention_head_dim=8)


def sd2_config() -> dict:
    """SD2.x traits: linear projections, heads of 64 channels... here 16, fp32 upcast flag."""
    return {**sd15_config(), "use_linear_projection": True, "attention_head_dim": (2, 4, 8, 8),
            "upcast_attention": True}


def sdxl_like_config(cross_attention_dim: int = CONTEXT, added_time: bool = True, depth=(1, 1, 2)) -> dict:
    """SDXL traits: no attention at full resolution, linear projections, transformer depth per
    level, added time ids ("text_time"). With added_time False and depth 1 it is the diffusers
    twin of tests/unets.sdxl_like_unet (model_channels 64, 64-channel heads)."""
    config = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(64, 128, 256),
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  cross_attention_dim=cross_attention_dim, attention_head_dim=(1, 2, 4),
                  use_linear_projection=True, transformer_layers_per_block=depth)
    if added_time:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
                      projection_class_embeddings_input_dim=POOLED + 6 * TIME_DIM)
    return config


def ddim() -> DDIMScheduler:
    """DDIM with Stable Diffusion's schedule settings."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def sd_schedule(cls, **config):
    """Any scheduler class with Stable Diffusion's training schedule (extra config: prediction_type...)."""
    return cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, **config)


def unet(config: dict, seed: int = 0) -> UNet2DConditionModel:
    return randomise(UNet2DConditionModel(**config), seed)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """Two levels: a latent at 1/2 of the image (keeps the test images small)."""
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=32)
    return randomise(vae, seed)


def _byte_symbols() -> list:
    """CLIP's byte-level BPE alphabet: one printable character per byte (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def tiny_text_encoder(folder: str, seed: int = 0, width: int = CONTEXT):
    """(CLIPTokenizer, CLIPTextModel): a byte-level vocabulary without merges (one token per
    character) written to `folder`, and a one-layer random text encoder of `width`."""
    import json
    import os

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {t: i for i, t in enumerate([*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>",
                                         "<|endoftext|>"])}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf8") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf8") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(seed)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width,
                                           num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                                           projection_dim=width))
    return tokenizer, encoder.eval()


def sd_pipeline(config: dict | None = None, scheduler=None, seed: int = 0, vae: bool = False,
                text_folder: str | None = None):
    """A StableDiffusionPipeline on a tiny random UNet (default SD1.x-like, DDIM); with a VAE
    (images out) and, given a folder for its vocabulary, a tokenizer and text encoder (prompts in)."""
    tokenizer, text_encoder = tiny_text_encoder(text_folder, seed) if text_folder else (None, None)
    pipe = StableDiffusionPipeline(vae=tiny_vae(seed) if vae else None, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet(config or sd15_config(), seed),
                                   scheduler=scheduler or ddim(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipeline(scheduler=None, seed: int = 0):
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet(sdxl_like_config(), seed),
                                     scheduler=scheduler or ddim())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeds(batch: int = 1, tokens: int = 8, width: int = CONTEXT, seed: int = 1):
    """(prompt_embeds, negative_prompt_embeds), each [batch, tokens, width]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, width, generator=g), torch.randn(batch, tokens, width, generator=g)


def pooled(batch: int = 1, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, POOLED, generator=g), torch.randn(batch, POOLED, generator=g)
