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


# The layers docs/design.md states, bottom up: a module imports only modules of its own layer or
# of layers below it. A new module must be given its layer here (and in docs/design.md).
LAYERS = [
    ("kernels", {"attention", "geometry", "tiling", "tome", "schedule", "prediction", "sag_mask", "sag_capture",
                 "forward_patch", "values", "fields", "layer_call", "layers", "maps", "guidance", "blur"}),
    ("methods", {"slothful", "nearsighted", "agentsd", "sag", "perturbed", "pag", "seg"}),
    ("table", {"methods"}),
    ("settings", {"settings", "presets", "user_presets", "infotext"}),
    ("patch", {"patch", "idle"}),
    ("tools", {"bench_cases", "bench_profile", "bench", "",  # "": the package facade lib_sloth/__init__
               "toy", "toy.scenes", "toy.model", "toy.judge", "toy.yardstick", "toy.sampling", "toy.configs",
               "toy.table"}),
    ("drawing", {"draw_maps"}),  # PIL, which the engine never imports; every front end draws with it
]
# the top: front ends, each importing the layers below and never another front end
ADAPTERS = ("lib_sloth.webui", "lib_sloth.diffusers", "lib_sloth.demo")
# Generic code that must not know which methods exist (it reads the method table instead)
METHOD_BLIND = ["lib_sloth.patch", "lib_sloth.maps", "lib_sloth.draw_maps", "lib_sloth.bench_cases",
                "lib_sloth.bench_profile", "lib_sloth.webui.a1111", "lib_sloth.webui.comfy_pass",
                "lib_sloth.webui.forge_main"]


def layer_of(module: str) -> int:
    if module.startswith(ADAPTERS):
        return len(LAYERS)
    short = module[len("lib_sloth."):] if module != "lib_sloth" else ""
    for rank, (_, names) in enumerate(LAYERS):
        if short in names:
            return rank
    raise AssertionError(f"{module} has no stated layer: add it to LAYERS here and to docs/design.md")


def test_every_module_imports_only_its_own_layer_or_the_layers_below():
    edges = import_graph.graph()
    wrong = [f"{a} ({LAYERS[layer_of(a)][0] if layer_of(a) < len(LAYERS) else 'adapter'}) imports {b}"
             for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a)]
    assert not wrong, wrong
    crossed = [(a, b) for a, targets in edges.items() for b in targets
               if a.startswith(ADAPTERS) and b.startswith(ADAPTERS) and a.split(".")[1] != b.split(".")[1]]
    assert not crossed, crossed


def test_the_layering_check_finds_an_upward_import():
    assert layer_of("lib_sloth.attention") < layer_of("lib_sloth.slothful") < layer_of("lib_sloth.methods")
    assert layer_of("lib_sloth.patch") < layer_of("lib_sloth.webui.a1111")


def test_generic_code_imports_no_method_module():
    from lib_sloth import methods

    method_modules = {methods.kernel_module(m).__name__ for m in methods.all_methods()}
    assert {"lib_sloth.slothful", "lib_sloth.nearsighted", "lib_sloth.agentsd", "lib_sloth.sag"} <= method_modules
    edges = import_graph.graph()
    found = {m: sorted(set(edges[m]) & method_modules) for m in METHOD_BLIND}
    assert not any(found.values()), found
