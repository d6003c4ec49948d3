"""The demo command a newcomer runs from the README, in its smoke mode (one column, two steps)."""
import os
import subprocess
import sys

from PIL import Image

from lib_sloth.presets import PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_demo_writes_the_grid_and_the_maps_over_real_images(tmp_path):
    env = {**os.environ, "SLOTH_TORCH_THREADS": os.environ.get("SLOTH_TORCH_THREADS", "1")}
    result = subprocess.run([sys.executable, "-m", "lib_sloth.demo", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = ["plain", *(name for name in PRESETS if name != "off")]
    timed = [line[:16].strip() for line in result.stdout.splitlines() if "s / image" in line]
    assert timed == rows  # one time per row, in the grid's order
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[1] > len(rows) * 90  # a row of images per preset
    made = sorted(os.listdir(tmp_path))
    assert "maps-background-fix-sag-map.png" in made  # SAG's map over the image
    assert any(name.startswith("maps-speed-") and "tiles" in name for name in made)
    assert sum(name.endswith("kv-budget.png") for name in made) == 5  # every rewriting preset
