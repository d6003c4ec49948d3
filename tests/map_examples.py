"""The README's example maps: real jobs in the A1111 stand-in with a tiny random-weight UNet.

    python tests/map_examples.py [OUT_DIR]     (default: docs/maps)

Each example is a txt2img job at 256 x 256 (8 steps) run through the real Script and A1111
adapter with "Show Sloth maps" on; its maps are drawn again with a caption that says the
UNet has random weights (the "image" under them is what such a UNet makes: colour noise).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE, os.path.join(HERE, "standins", "a1111")):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

import standin  # noqa: E402
import standin_sd_model  # noqa: E402
from a1111_jobs import make_job, start_webui  # noqa: E402
from lib_sloth import maps  # noqa: E402
from lib_sloth.settings import settings_from_dict  # noqa: E402
from lib_sloth import draw_maps  # noqa: E402
from lib_sloth.webui import hooks  # noqa: E402
from unets import sd15_unet  # noqa: E402

JOBS = {
    "sag": {"slothful.enabled": True, "sag.enabled": True, "sag.scale": 1.0, "sag.threshold": 1.0},
    "nearsighted": {"nearsighted.enabled": True, "nearsighted.base_tile_size": 16,
                    "nearsighted.peak_tile_size": 24},
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = argv[0] if argv else os.path.join(ROOT, "docs", "maps")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    start_webui(standin_sd_model.TinyLatentDiffusion(sd15_unet(context_dim=32), kind="sd1", context_dim=32, tokens=8))
    made = []
    original = hooks.MapRecorder
    hooks.MapRecorder = lambda *a: made.append(original(*a)) or made[-1]
    try:
        for name, data in JOBS.items():
            settings = settings_from_dict({**data, "show_maps": True})
            processed = standin.run(make_job(settings, size=256, steps=8))
            label = "txt2img, random-weight test UNet (example)"
            for m in draw_maps.render(made[-1], processed.images[processed.index_of_first_image], label):
                kind = m.caption.split(" - ")[0].replace("Sloth ", "").replace(" ", "-").replace("/", "").lower()
                path = os.path.join(out_dir, f"example-{name}-{kind}.png")
                m.image.save(path, optimize=True)
                print(path)
    finally:
        hooks.MapRecorder = original
        standin.reset()
    assert isinstance(made[-1], maps.MapRecorder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
