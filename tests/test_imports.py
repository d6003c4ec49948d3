"""The module structure: no import cycles anywhere in lib_sloth, and the engine never imports a WebUI."""
import os
import subprocess
import sys

import import_graph

# Modules that only exist inside a WebUI (or its UI toolkit); the engine must run without them.
WEBUI_MODULES = {"gradio", "modules", "modules_forge", "ldm_patched", "backend", "scripts", "fastapi", "starlette"}


def test_the_static_import_graph_has_no_cycle():
    edges = import_graph.graph()
    assert "lib_sloth.settings" in edges and "lib_sloth.webui.a1111" in edges  # the walk found the package
    assert import_graph.find_cycle(edges) is None, " -> ".join(import_graph.find_cycle(edges))


def test_the_cycle_check_finds_a_cycle():
    assert import_graph.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert import_graph.find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_engine_modules_import_no_webui_module():
    for module, path in import_graph.modules().items():
        if module.startswith("lib_sloth.webui"):
            continue
        assert not import_graph.external_imports(path) & WEBUI_MODULES, module


def test_only_the_diffusers_adapter_imports_diffusers():
    # the engine and the WebUI side run without diffusers (a test-only dependency); the adapter
    # imports no WebUI module either
    for module, path in import_graph.modules().items():
        external = import_graph.external_imports(path)
        if module == "lib_sloth.diffusers" or module.startswith("lib_sloth.diffusers."):
            assert not external & WEBUI_MODULES, module
            continue
        assert not external & {"diffusers", "transformers"}, module


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter, but lib_sloth is dropped from sys.modules before each import, so every
    # module is imported first (as a user's `import lib_sloth.x` would) and a cycle that only
    # shows at run time (a half-initialised module) fails here.
    names = [m for m in import_graph.modules()]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'lib_sloth' or m.startswith('lib_sloth.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(" + repr(names) + "))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=import_graph.ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"ok {len(names)}"
