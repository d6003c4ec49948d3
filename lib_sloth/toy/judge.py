"""The yardstick's judge: a small CNN trained on real scenes (never on the UNet's samples) that
reads a scene's six prompt attributes (colours, shapes, relation, background).

Its 128-dim penultimate layer is the feature space of the yardstick's Fréchet distance.
"""
from __future__ import annotations

import os
from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from . import scenes

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "models", "toy-judge.safetensors")
FEATURES = 128
TRAIN_SCENES = 12288
STEPS = 600
BATCH = 64


class Judge(nn.Module):
    """[B, 3, 32, 32] in [-1, 1] -> per-slot logits (list of 6 [B, choices]) and features [B, 128]."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(block(3, 32), nn.AvgPool2d(2), block(32, 64), nn.AvgPool2d(2),
                                  block(64, 96), nn.AvgPool2d(2))
        self.embed = nn.Linear(96 * 4 * 4, FEATURES)
        self.heads = nn.Linear(FEATURES, sum(len(c) for c in scenes.SLOT_CHOICES))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.silu(self.embed(self.body(images).flatten(1)))

    def forward(self, images: torch.Tensor) -> Tuple[list, torch.Tensor]:
        feats = self.features(images)
        logits = self.heads(feats).split([len(c) for c in scenes.SLOT_CHOICES], dim=1)
        return list(logits), feats

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
        """(attributes [B, 6] long, features [B, 128] float64) for images in [-1, 1]."""
        labels, feats = [], []
        for i in range(0, len(images), batch):
            logits, f = self(images[i:i + batch].float().clamp(-1, 1))
            labels.append(torch.stack([lg.argmax(1) for lg in logits], dim=1))
            feats.append(f.double())
        return torch.cat(labels), torch.cat(feats)


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild blur and noise, so the judge reads a sample's content, not a real scene's exact edges."""
    b = len(images)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = torch.rand(b, 1, 1, 1, generator=g) * 0.6
    images = images + amount * (blurred - images)
    return (images + 0.06 * torch.rand(b, 1, 1, 1, generator=g) * torch.randn(images.shape, generator=g)).clamp(-1, 1)


def train(out: str, seed: int, log) -> Judge:
    """Train on TRAIN_SCENES real scenes from `seed` (AdamW, STEPS x BATCH), save as safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    prompts, images = scenes.dataset(TRAIN_SCENES, seed)
    labels = scenes.labels_of(prompts)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * (1 - step / STEPS)
        idx = torch.randint(len(images), (BATCH,), generator=g)
        logits, _ = judge(_augment(images[idx], g))
        loss = sum(F.cross_entropy(lg, labels[idx, i]) for i, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            log(f"judge step {step + 1}/{STEPS} loss {loss.item():.4f}")
    judge.eval()
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, out, metadata={"seed": str(seed)})
    log(f"judge saved -> {out}")
    return judge


def load(path: str = WEIGHTS) -> Judge:
    from safetensors.torch import load_file

    judge = Judge()
    judge.load_state_dict(load_file(path))
    return judge.eval()
