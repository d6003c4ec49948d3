"""The quality yardstick: prompt adherence read by the judge, and a Fréchet distance in the
judge's feature space against held-out real scenes; every comparison paired by seed.

- adherence: share of images whose six attributes (colour, shape, relation, colour, shape,
  background) the judge reads exactly as the prompt asked.
- attributes: share of the six attributes read as asked, averaged over images (finer-grained
  than adherence, so its paired standard error is smaller).
- FD: Fréchet distance between Gaussians fitted to the judge's 128-dim features of the images
  and of `reference` real scenes (realism and diversity; 0 = same distribution). It depends on
  the number of images, so only values at the same n are compared.

Paired deltas: config and baseline are sampled from the same noise and prompt per image, so
per-image differences d carry the effect; SE = std(d) / sqrt(n). The FD delta's SE is the
standard deviation of the delta over bootstrap resamples of the same image indices in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import scenes

REFERENCE_SEED = 2  # held-out real scenes (the judge trains on seed 1, the UNet on seed 0)
PROMPT_SEED = 3  # the prompts the table samples
BOOTSTRAP = 200


@dataclass(frozen=True)
class Scores:
    """Per-image scores of one configuration: correct [n] bool, attributes [n] float, features [n, 128]."""

    correct: torch.Tensor
    attributes: torch.Tensor
    features: torch.Tensor

    @property
    def adherence(self) -> float:
        return float(self.correct.double().mean())

    @property
    def attribute_accuracy(self) -> float:
        return float(self.attributes.mean())


@dataclass(frozen=True)
class Reference:
    """Mean [128] and covariance [128, 128] of real held-out scenes' judge features (float64)."""

    mean: torch.Tensor
    cov: torch.Tensor


def eval_prompts(n: int) -> list:
    """The n prompts the yardstick samples, the same for every configuration."""
    return scenes.random_prompts(n, torch.Generator().manual_seed(PROMPT_SEED))


def score(judge, images: torch.Tensor, prompts: Sequence[scenes.Prompt]) -> Scores:
    read, feats = judge.read(images)
    hits = read == scenes.labels_of(prompts)
    return Scores(hits.all(dim=1), hits.double().mean(dim=1), feats)


def reference(judge, n: int = 2000) -> Reference:
    _, images = scenes.dataset(n, REFERENCE_SEED)
    _, feats = judge.read(images)
    return Reference(feats.mean(0), torch.cov(feats.T))


def frechet(features: torch.Tensor, ref: Reference) -> float:
    """|mu - mu_r|^2 + tr(S) + tr(S_r) - 2 tr((S_r^1/2 S S_r^1/2)^1/2), in float64."""
    mu, cov = features.mean(0), torch.cov(features.T)
    vals, vecs = torch.linalg.eigh(ref.cov)
    root = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root @ cov @ root).clamp(min=0).sqrt().sum()
    return float((mu - ref.mean).pow(2).sum() + cov.trace() + ref.cov.trace() - 2 * cross)


@dataclass(frozen=True)
class Delta:
    """A paired difference (config - baseline) and its standard error."""

    value: float
    se: float


def paired(per_image: torch.Tensor, baseline: torch.Tensor) -> Delta:
    """Mean paired difference and its standard error std(d) / sqrt(n)."""
    d = per_image.double() - baseline.double()
    return Delta(float(d.mean()), float(d.std() / len(d) ** 0.5) if len(d) > 1 else 0.0)


def frechet_delta(features: torch.Tensor, baseline: torch.Tensor, ref: Reference, seed: int = 0) -> Delta:
    """FD(config) - FD(baseline), SE from paired bootstrap resamples of the image indices."""
    g = torch.Generator().manual_seed(seed)
    n = len(features)
    value = frechet(features, ref) - frechet(baseline, ref)
    draws = []
    for _ in range(BOOTSTRAP):
        idx = torch.randint(n, (n,), generator=g)
        draws.append(frechet(features[idx], ref) - frechet(baseline[idx], ref))
    return Delta(value, float(torch.tensor(draws).std()))
