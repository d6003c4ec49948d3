"""The README tells the truth about the settings table and the commands."""
import os

from lib_sloth import bench
from lib_sloth.settings import iter_fields

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf8").read()


def test_every_setting_is_explained_in_its_section():
    settings = README.split("## Settings", 1)[1].split("## Compatibility", 1)[0]
    sections = {"slothful": "(`slothful.*`)", "tile": "(`tile.*`)", "nearsighted": "(`nearsighted.*`)",
                "sag": "(`sag.*`)", "agentsd": "(`agentsd.*`)", "pag": "(`pag.*`)", "seg": "(`seg.*`)"}
    for spec in iter_fields():
        head, _, rest = spec.path.partition(".")
        if head not in sections:
            assert f"`{spec.path}`" in settings, spec.path
            continue
        body = settings.split(sections[head], 1)[1].split("\n### ", 1)[0]
        group, _, leaf = rest.rpartition(".")
        assert leaf in body or f"`{group}.*`" in body, spec.path  # "`input.*` ... as Slothful"


def test_commands_and_measured_cases_are_listed():
    assert "bash .ci/run" in README and "bash .ci/bench" in README
    measured = README.split("### Measured", 1)[1]
    cases = bench.default_cases() + bench.sag_cases() + bench.guidance_cases()
    for case in [c.name for c in cases]:
        assert f"| {case} |" in measured, case


def test_the_measured_tables_are_the_committed_bench_runs():
    """Each table under "Measured" is what lib_sloth.bench.table prints for the JSON the command
    beside it wrote (docs/bench/), row for row; the noise line quotes the same run."""
    import json

    measured = README.split("### Measured", 1)[1].split("\n## ", 1)[0]
    for name in ("bench-1t.json", "bench-2t.json", "bench-guidance-1t.json", "bench-guidance-1024-1t.json"):
        assert f"--json docs/bench/{name}" in measured, name
        with open(os.path.join(ROOT, "docs", "bench", name), encoding="utf8") as f:
            report = json.load(f)
        assert bench.table(report["cases"]) in measured, name
        if "1024" in report["noise"]:  # the UNet tables
            assert f"1024² {100 * report['noise']['1024']['noise']:.1f} %" in measured, name
        else:  # a guidance table: one CFG step at one size
            (key, noise), = report["noise"].items()
            assert f"{key.split()[0]}² CFG step {100 * noise['noise']:.1f} %" in measured, name


def test_the_map_diagrams_are_the_ones_the_command_draws(tmp_path):
    from PIL import Image, ImageChops

    from lib_sloth.webui import map_diagrams

    assert "python -m lib_sloth.webui.map_diagrams" in README
    written = map_diagrams.render_all(str(tmp_path))
    assert written
    for name in written:
        assert f"docs/maps/{name}" in README, name
        committed = Image.open(os.path.join(ROOT, "docs", "maps", name)).convert("RGB")
        fresh = Image.open(tmp_path / name).convert("RGB")
        assert committed.size == fresh.size and ImageChops.difference(committed, fresh).getbbox() is None, name


def test_the_diffusers_example_runs_as_written(tmp_path):
    """The README's diffusers block, verbatim, on a tiny random pipeline (tokenizer, text encoder,
    UNet and VAE) built here: it makes an image, the info text and the maps."""
    import pytest

    pytest.importorskip("diffusers")
    import diffusers_unets as du
    from PIL import Image

    block = README.split("## diffusers", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 10
    pipe = du.sd_pipeline(vae=True, text_folder=str(tmp_path))
    before = dict(pipe.unet.attn_processors)
    namespace = {"pipe": pipe}
    exec(compile(block, "README.md (diffusers)", "exec"), namespace)
    image, run, maps = namespace["image"], namespace["run"], namespace["maps"]
    assert isinstance(image, Image.Image) and image.info["parameters"].startswith("Sloth: v1")
    assert "Sloth NSA:" in image.info["parameters"] and "Sloth SAG:" in image.info["parameters"]
    assert run.rewritten and len(maps) >= 2 and all(isinstance(m, Image.Image) for m in maps)
    assert dict(pipe.unet.attn_processors) == before


def test_every_row_of_the_differences_table_names_labels_that_differences_py_prints():
    """The reproduce column names lines of tests/tools/differences.py: literal labels, or an f-string's
    fixed part followed by the varying word (`SAG 9 taps sigma …`, `… 1D_AVG` after a full label)."""
    import re

    table = README.split("## Differences from the original nodes", 1)[1].split("\n## ", 1)[0]
    tool = open(os.path.join(ROOT, "tests", "tools", "differences.py"), encoding="utf8").read()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.count("|") == 5][2:]
    assert any("`NSA seams`" in r for r in rows) and any("`NSA global edges 2D_AVG`" in r for r in rows)
    for row in rows:
        previous = ""
        for label in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[1]):
            if label.startswith("… "):
                label = previous.rsplit(" ", 1)[0] + " " + label[2:]
            fixed = label.rstrip(" …").rsplit(" ", 1)[0] + " {" if label.endswith("…") or " " in label else None
            literal = any(f"{q}{label}{q}" in tool for q in "'\"")
            assert literal or (fixed and f'f"{fixed}' in tool) or f'"{label.rstrip(" …")}' in tool, label
            previous = label
