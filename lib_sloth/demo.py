"""See what each preset does, on the small model shipped in models/ (no WebUI, no download).

    python -m lib_sloth.demo [--out sloth-demo] [--steps 12] [--smoke]     (or: bash .ci/demo)

Writes to --out:
- grid.png: rows = plain and each built-in preset, columns = prompts x seeds (the same noise
  in every row of a column), so a row's difference from the plain row is the preset's effect;
- maps-<preset>-*.png: the "Show Sloth maps" maps of each preset's first column, drawn by the
  WebUI's own drawing code over that real image;
and prints the time per image of each row. --smoke: one column, two steps (CI's check that
the command runs, not a picture to look at).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .maps import MapRecorder
from .presets import PRESETS, preset
from .toy import model as toy
from .toy.sampling import generate, to_uint8
from . import draw_maps

PROMPTS = ("red circle left of blue square on stripes", "yellow triangle above green cross on checks",
           "white square left of red triangle on dots", "blue cross above yellow circle on plain")
SEEDS = (1, 2)
CFG_SCALE = 4.0
CELL = 96  # pixels per 32 x 32 image in the grid (nearest: the model's real pixels)
LABEL_W = 120
HEADER_H = 58


def to_pil(image: torch.Tensor, side: int) -> Image.Image:
    """[3, H, W] in [-1, 1] -> RGB PIL image scaled (nearest) to side x side."""
    array = to_uint8(image).permute(1, 2, 0).numpy()
    return Image.fromarray(array).resize((side, side), Image.NEAREST)


def grid_image(rows: Sequence[str], columns: Sequence[str], images: List[torch.Tensor]) -> Image.Image:
    """rows x columns of images ([columns, 3, H, W] per row) with row names and column captions."""
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (LABEL_W + CELL * len(columns), HEADER_H + CELL * len(rows)), (24, 24, 28))
    draw = ImageDraw.Draw(canvas)
    for c, caption in enumerate(columns):
        for k, line in enumerate(_wrap(caption, 16)):
            draw.text((LABEL_W + c * CELL + 3, 3 + 11 * k), line, fill=(235, 235, 235), font=font)
    for r, (name, row) in enumerate(zip(rows, images)):
        draw.text((4, HEADER_H + r * CELL + CELL // 2 - 6), name, fill=(235, 235, 235), font=font)
        for c, image in enumerate(row):
            canvas.paste(to_pil(image, CELL), (LABEL_W + c * CELL, HEADER_H + r * CELL))
    return canvas


def _wrap(text: str, width: int) -> List[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Grid and maps of every built-in preset on the toy model.")
    parser.add_argument("--out", default="sloth-demo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="one column, two steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("SLOTH_TORCH_THREADS", "2")))
    os.makedirs(args.out, exist_ok=True)
    prompts, seeds, steps = (PROMPTS[:1], SEEDS[:1], 2) if args.smoke else (PROMPTS, SEEDS, args.steps)
    columns = [(p, s) for p in prompts for s in seeds]
    unet, text = toy.load()
    names = list(PRESETS)  # "off" = plain
    rows = []
    start = time.perf_counter()
    for name in names:
        settings = preset(name)
        recorder = MapRecorder(settings, seeds[0]) if name != "off" else None
        images, seconds = generate(unet, text, [p for p, _ in columns], [s for _, s in columns], steps=steps,
                                   cfg_scale=CFG_SCALE, settings=settings, chunk=len(columns), recorder=recorder)
        rows.append(images)
        label = "plain" if name == "off" else name
        print(f"{label:16s} {seconds:.3f} s / image ({len(columns)} images, {steps} steps, CFG {CFG_SCALE})",
              flush=True)
        if recorder is not None:
            caption = f"toy model, {steps} steps, first column"
            for m in draw_maps.render(recorder, to_pil(images[0], 256), caption):
                kind = m.caption.split(" - ")[0].replace("Sloth ", "").replace(" ", "-").replace("/", "").lower()
                m.image.save(os.path.join(args.out, f"maps-{label.replace(' ', '-')}-{kind}.png"), optimize=True)
    row_names = ["plain" if n == "off" else n for n in names]
    grid = grid_image(row_names, [f"{p} (seed {s})" for p, s in columns], rows)
    grid.save(os.path.join(args.out, "grid.png"), optimize=True)
    print(f"wrote {args.out}/grid.png and the maps in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
