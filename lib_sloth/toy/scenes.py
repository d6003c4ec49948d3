"""Procedural scenes for the toy model: two coloured shapes in a relation, on a textured background.

A scene is drawn from a prompt of six words, e.g. ``red circle left of blue square on stripes``:

- two shapes (circle, square, triangle, cross) in two different colours, each with a dark
  one-pixel outline, placed so that the relation holds: ``left of`` = same row (±3 px), first
  shape left; ``above`` = same column, first shape on top. The relation ties together two
  objects up to 26 px apart: long-range structure at the model's top level.
- a background texture (plain gradient, stripes, checks, dots) at a 4 px period over the whole
  image: detail that pooling or tiling at the top level can lose.

Images are [B, 3, 32, 32] in [-1, 1], drawn at 2x and averaged down (anti-aliased edges).
Everything is a function of a torch.Generator: same seed, same scenes, on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F

SIZE = 32
COLOURS = ("red", "green", "blue", "yellow", "white")
SHAPES = ("circle", "square", "triangle", "cross")
RELATIONS = ("left of", "above")
BACKGROUNDS = ("plain", "stripes", "checks", "dots")
# the judge reads these six attributes; the prompt's words, in order
SLOTS = ("colour1", "shape1", "relation", "colour2", "shape2", "background")
SLOT_CHOICES = (COLOURS, SHAPES, RELATIONS, COLOURS, SHAPES, BACKGROUNDS)

_RGB = torch.tensor([[0.95, -0.75, -0.75], [-0.7, 0.85, -0.7], [-0.65, -0.55, 0.95],
                     [0.95, 0.85, -0.8], [0.95, 0.95, 0.95]])


@dataclass(frozen=True)
class Prompt:
    """One scene description: indices into SLOT_CHOICES, in SLOTS order."""

    colour1: int
    shape1: int
    relation: int
    colour2: int
    shape2: int
    background: int

    def words(self) -> str:
        idx = (self.colour1, self.shape1, self.relation, self.colour2, self.shape2, self.background)
        c1, s1, rel, c2, s2, bg = (choices[i] for choices, i in zip(SLOT_CHOICES, idx))
        return f"{c1} {s1} {rel} {c2} {s2} on {bg}"

    def labels(self) -> List[int]:
        return [self.colour1, self.shape1, self.relation, self.colour2, self.shape2, self.background]

    @staticmethod
    def parse(text: str) -> "Prompt":
        """Inverse of words(): ``red circle left of blue square on stripes``."""
        words = text.replace("left of", "left_of").split()
        if len(words) != 7 or words[5] != "on":
            raise ValueError(f"not a scene prompt: {text!r}")
        c1, s1, rel, c2, s2, _, bg = words
        return Prompt(COLOURS.index(c1), SHAPES.index(s1), RELATIONS.index(rel.replace("_", " ")),
                      COLOURS.index(c2), SHAPES.index(s2), BACKGROUNDS.index(bg))


def random_prompts(n: int, generator: torch.Generator) -> List[Prompt]:
    """n prompts, uniform over slots, the two colours always different."""
    out = []
    for _ in range(n):
        c1, c2 = torch.randperm(len(COLOURS), generator=generator)[:2].tolist()
        s1, s2 = torch.randint(len(SHAPES), (2,), generator=generator).tolist()
        rel = int(torch.randint(len(RELATIONS), (1,), generator=generator))
        bg = int(torch.randint(len(BACKGROUNDS), (1,), generator=generator))
        out.append(Prompt(c1, s1, rel, c2, s2, bg))
    return out


def labels_of(prompts: Sequence[Prompt]) -> torch.Tensor:
    """[B, 6] long: each prompt's index per slot."""
    return torch.tensor([p.labels() for p in prompts], dtype=torch.long)


def render(prompts: Sequence[Prompt], generator: torch.Generator) -> torch.Tensor:
    """Draw one scene per prompt: [B, 3, 32, 32] fp32 in [-1, 1]."""
    b, hi = len(prompts), SIZE * 2
    yy, xx = torch.meshgrid(torch.arange(hi) + 0.5, torch.arange(hi) + 0.5, indexing="ij")
    yy, xx = yy / 2, xx / 2  # pixel units on the 32 px image
    canvas = _backgrounds(prompts, xx, yy, generator)
    centres = _placements(prompts, generator)
    for slot in range(2):
        shape = torch.tensor([p.shape1 if slot == 0 else p.shape2 for p in prompts])
        colour = _RGB[[p.colour1 if slot == 0 else p.colour2 for p in prompts]]
        colour = (colour + 0.08 * torch.randn(b, 3, generator=generator)).clamp(-1, 1)
        cx, cy, r = centres[slot]
        dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
        outer = _shape_mask(shape, dx, dy, r)
        inner = _shape_mask(shape, dx, dy, r - 1.0)
        fill = colour[:, :, None, None]
        canvas = torch.where(outer[:, None], -0.9 + 0.1 * fill, canvas)  # outline: near black
        canvas = torch.where(inner[:, None], fill, canvas)
    return F.avg_pool2d(canvas, 2).clamp(-1, 1)


def _shape_mask(shape: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: inside shape[b] of radius r[b] centred at dx = dy = 0."""
    r = r[:, None, None]
    circle = dx ** 2 + dy ** 2 <= r ** 2
    square = torch.maximum(dx.abs(), dy.abs()) <= 0.85 * r
    # upward triangle: apex at -r, base at +0.8 r with half-width r
    tri = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) / 1.8)
    arm = r / 2.8
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    masks = torch.stack([circle, square, tri, cross])  # [4, B, H, W]
    return masks[shape, torch.arange(len(shape))]


def _placements(prompts: Sequence[Prompt], g: torch.Generator):
    """Per slot (cx, cy, r), each [B]: radii 4-6.5 px, the relation's geometry, inside the image."""
    out = [([], [], []), ([], [], [])]
    for p in prompts:
        r1, r2 = (4 + 2.5 * torch.rand(2, generator=g)).tolist()
        gap = 3 + 6 * float(torch.rand(1, generator=g))
        along_free = SIZE - 2 - (r1 + r2 + gap + r1 + r2)  # slack along the relation's axis
        start = 1 + r1 + along_free * float(torch.rand(1, generator=g))
        a1, a2 = start, start + r1 + gap + r2
        across = 1 + max(r1, r2) + (SIZE - 2 - 2 * max(r1, r2)) * float(torch.rand(1, generator=g))
        jitter = (torch.rand(2, generator=g) * 6 - 3).tolist()
        b1 = min(max(across + jitter[0], 1 + r1), SIZE - 1 - r1)
        b2 = min(max(across + jitter[1], 1 + r2), SIZE - 1 - r2)
        if RELATIONS[p.relation] == "left of":
            first, second = (a1, b1), (a2, b2)
        else:
            first, second = (b1, a1), (b2, a2)
        for slot, (cx, cy), r in ((0, first, r1), (1, second, r2)):
            out[slot][0].append(cx)
            out[slot][1].append(cy)
            out[slot][2].append(r)
    return [tuple(torch.tensor(v) for v in slot) for slot in out]


def _backgrounds(prompts: Sequence[Prompt], xx: torch.Tensor, yy: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """[B, 3, H, W]: a dim two-colour gradient, with the prompt's texture at a 4 px period."""
    b = len(prompts)
    base = -0.55 + 0.35 * torch.rand(b, 3, generator=g)
    other = -0.55 + 0.35 * torch.rand(b, 3, generator=g)
    angle = torch.rand(b, generator=g) * 6.2832
    t = ((xx[None] - 16) * angle.cos()[:, None, None] + (yy[None] - 16) * angle.sin()[:, None, None]) / 32 + 0.5
    img = base[:, :, None, None] + (other - base)[:, :, None, None] * t[:, None]
    phase = torch.rand(b, 2, generator=g) * 4
    px, py = xx[None] + phase[:, 0, None, None], yy[None] + phase[:, 1, None, None]
    diagonal = torch.rand(b, generator=g) < 0.5  # stripes: vertical or diagonal
    stripes = torch.where(diagonal[:, None, None], ((px + py) % 4) < 2, (px % 4) < 2)
    checks = ((px % 4 < 2) ^ (py % 4 < 2))
    dots = ((px % 4) - 2) ** 2 + ((py % 4) - 2) ** 2 <= 1.0
    kind = torch.tensor([p.background for p in prompts])
    texture = torch.stack([torch.zeros_like(stripes), stripes, checks, dots])[kind, torch.arange(b)]
    return img + 0.35 * texture[:, None].float()


def dataset(n: int, seed: int):
    """n (prompt, image) pairs from one seed: (prompts, [n, 3, 32, 32]). Drawn in chunks of 256."""
    g = torch.Generator().manual_seed(seed)
    prompts = random_prompts(n, g)
    images = torch.cat([render(prompts[i:i + 256], g) for i in range(0, n, 256)])
    return prompts, images
