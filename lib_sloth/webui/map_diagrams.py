"""The README's diagrams of the tile geometry and the K/V budget of the built-in presets.

    python -m lib_sloth.webui.map_diagrams [OUT_DIR]     (default: docs/maps)

Each diagram is what "Show Sloth maps" would draw for that preset on SD1.5 at 512 x 512 with 20
steps (seed 1): the real planners (lib_sloth.methods.plan_layer) are asked about every
self-attention layer of the SD1.5 UNet at every step, the real recorder (lib_sloth.maps) records
their answers and the same drawing code (draw_maps) draws them, over a plain grey image instead
of a generated one. No UNet runs, so the command takes a second and needs no weights.
"""
from __future__ import annotations

import os
import sys
from typing import List, Tuple

from PIL import Image

from ..layer_call import LayerCall, TokenGrid
from ..maps import MapRecorder
from ..methods import plan_layer
from ..presets import preset
from .. import draw_maps

STEPS = 20
SEED = 1
LATENT = (64, 64)  # SD1.5 at 512 x 512
# SD1.5's self-attention layers: (block, level, layers); level = log2 of the downsample
SD15_LAYERS: Tuple[Tuple[str, int, int], ...] = (("input", 0, 2), ("input", 1, 2), ("input", 2, 2), ("middle", 3, 1),
                                                 ("output", 2, 3), ("output", 1, 3), ("output", 0, 3))
PRESETS = ("slothful", "soft", "detail", "speed", "agentsd")


def record_preset(name: str, steps: int = STEPS, latent: Tuple[int, int] = LATENT) -> MapRecorder:
    """The recorder of one pass of preset `name`, planned layer by layer as the patch plans it."""
    settings = preset(name)
    recorder = MapRecorder(settings, SEED)
    for step in range(steps):
        for block, level, layers in SD15_LAYERS:
            h, w = -(-latent[0] // 2 ** level), -(-latent[1] // 2 ** level)
            call = LayerCall(block, TokenGrid(h, w, level), 2, step, steps, SEED)
            for _ in range(layers):
                recorder.layer(call, plan_layer(settings, call), latent)
    return recorder


def background(size: Tuple[int, int] = (512, 512)) -> Image.Image:
    return Image.new("RGB", size, (92, 96, 104))


def render_all(out_dir: str) -> List[str]:
    """Write every diagram as PNG into out_dir; returns the file names."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name in PRESETS:
        recorder = record_preset(name)
        label = f"preset '{name}', SD1.5 512x512, {STEPS} steps (diagram)"
        for m in draw_maps.render(recorder, background(), label):
            kind = "budget" if "K/V budget" in m.caption else f"tiles-level{m.caption.split('level ')[1][0]}"
            path = os.path.join(out_dir, f"{name.replace(' ', '-')}-{kind}.png")
            m.image.save(path, optimize=True)
            written.append(os.path.basename(path))
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = argv[0] if argv else os.path.join("docs", "maps")
    for name in render_all(out_dir):
        print(os.path.join(out_dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
