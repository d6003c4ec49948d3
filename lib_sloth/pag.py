"""Perturbed-Attention Guidance (Ahn et al., ECCV 2024), backend-independent.

One more UNet pass on the cond rows in which the chosen self-attention layers return their values
(the attention map replaced by the identity: the layer's output is to_out(to_v(x))), and the guided
prediction cfg + scale * (cond - perturbed) in x0 space, as ComfyUI's PerturbedAttentionGuidance
node (comfy_extras/nodes_pag.py). Defaults as that node: scale 3, every self-attention of the
middle block. Sources and choices: docs/guidance-notes.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fields import setting
from .guidance import BuiltinTwin
from .perturbed import PerturbedGuidance, PerturbedSettings


@dataclass(frozen=True)
class PagSettings(PerturbedSettings):
    enabled: bool = setting(False, hint="Perturbed-Attention Guidance: one more UNet pass on the cond rows per "
                                        "guided step (batched with cond/uncond where the WebUI batches them)")


def identity_attention(layer, v_in: torch.Tensor) -> torch.Tensor:
    """The perturbed layer's attention output before to_out: its values, to_v(v_in) [B, N, heads*d].

    v_in: what the layer computes V from [B, N, C] -- x itself, or A1111's hypernetwork-transformed
    context (the patch's kv_source, handed to Plan.run). Every query attends only to itself.
    """
    return layer.to_v(v_in)


class PagPass(PerturbedGuidance):
    """PAG for one sampling pass (lib_sloth.perturbed.PerturbedGuidance): the chosen layers return their values."""

    name = "PAG"
    method = "pag"
    # Forge main / reForge extensions-builtin/sd_forge_perturbed_attention: "pagi_*" since Forge PR #2614,
    # "PerturbedAttentionGuidance_*" before (Forge 6c2afbbb); both perturb the middle block
    builtin_twins = (BuiltinTwin("pagi_enabled", "Forge's built-in PerturbedAttentionGuidance"),
                     BuiltinTwin("PerturbedAttentionGuidance_enabled", "Forge's built-in PerturbedAttentionGuidance"))

    def perturbed_attention(self, layer, x, k_in, v_in, grid, upcast):
        return identity_attention(layer, v_in)
