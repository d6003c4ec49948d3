"""javascript/sloth-hints.js in a real DOM (jsdom) under the A1111 stand-in's script.js.

Issue 10 item 15. A1111 1.10.1 ``script.js`` runs every ``onUiUpdate`` callback on each batch of
DOM mutations of the page (one MutationObserver on gradioApp(), childList + subtree), which
includes the progress polling of a running job; its own ``javascript/hints.js`` therefore only
looks at ``record.addedNodes``. The first version of our hints scanned ~150 ids with
getElementById / querySelectorAll on every such batch. Here the page first mounts the accordion,
then re-renders one control, then polls progress 40 times outside the accordion.
"""
import json
import os
import shutil
import subprocess

import pytest

from lib_sloth.webui import hints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JS_DIR = os.path.join(ROOT, "tests", "js")
INSTALLED = shutil.which("node") is not None and os.path.isdir(os.path.join(JS_DIR, "node_modules", "jsdom"))
if not INSTALLED and not os.environ.get("CI"):  # CI installs it (.ci/setup); a worktree may not have yet
    pytest.skip("jsdom is not installed: npm ci --prefix tests/js", allow_module_level=True)

HINT = hints.hint_map()


@pytest.fixture(scope="module")
def run():
    out = subprocess.run(["node", os.path.join(JS_DIR, "hints_harness.js"), hints.JS_PATH], capture_output=True,
                         text=True, timeout=120, cwd=JS_DIR)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_every_part_of_a_mounted_control_gets_its_hint(run, tab):
    p = f"script_{tab}_sloth_"
    for item in ("tile__enabled", "tile__tile_size"):
        seen = run["first"][p + item]
        assert seen["self"] == HINT[item] and seen["parts"] and set(seen["parts"]) == {HINT[item]}


def test_the_input_accordion_hint_is_on_its_header_only(run):
    accordion = run["first"]["script_txt2img_sloth_enabled"]
    assert accordion["self"] == ""  # not the whole accordion: its body holds other controls
    assert accordion["parts"][:2] == [HINT["enabled"]] * 2  # header label and its checkbox
    assert accordion["parts"][2] == ""  # a plain span in the body is not the toggle
    assert run["first"]["script_txt2img_sloth_enabled-visible-checkbox"]["self"] == HINT["enabled"]


def test_a_rerendered_part_of_a_control_gets_its_hint_again(run):
    seen = run["rerendered"]["script_txt2img_sloth_tile__tile_size"]
    assert set(seen["parts"]) == {HINT["tile__tile_size"]}


def test_progress_polling_costs_one_lookup_per_added_node_and_no_page_scan(run):
    polling = run["polling"]
    assert polling["getElementById"] == 0
    assert polling["querySelectorAll"] <= polling["addedNodes"]  # one, on the added node itself
    assert polling["closest"] <= polling["addedNodes"]
