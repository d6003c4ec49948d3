"""The import graph of lib_sloth, read statically from the source (every import statement,
including ones inside functions and under TYPE_CHECKING: a deferred import is still a cycle).

    python tests/import_graph.py    # prints "module: imports" for every module
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "lib_sloth"


def modules(root: str = ROOT) -> Dict[str, str]:
    """Dotted module name -> file path, for every .py file of the package."""
    out = {}
    base = os.path.join(root, PACKAGE)
    for folder, _, files in os.walk(base):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
            out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return out


def imports_of(module: str, path: str, known: Set[str]) -> List[str]:
    """The package modules `module` imports (absolute and relative), without its own ancestors."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    package = module if is_package else module.rpartition(".")[0]
    found: List[str] = []
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from pkg import name` imports the submodule pkg.name when there is one
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        for target in targets:
            target = _owning_module(target, known)
            ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
            if target and target != module and target not in ancestors and target not in found:
                found.append(target)
    return found


def _owning_module(name: str, known: Set[str]) -> Optional[str]:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def graph(root: str = ROOT) -> Dict[str, List[str]]:
    mods = modules(root)
    known = set(mods)
    return {m: sorted(imports_of(m, p, known)) for m, p in sorted(mods.items())}


def find_cycle(edges: Dict[str, List[str]]) -> Optional[List[str]]:
    """One import cycle as [a, b, ..., a], or None."""
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def external_imports(path: str) -> Set[str]:
    """Top-level names of the absolute imports of one file (torch, gradio, modules, ...)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


if __name__ == "__main__":
    for mod, deps in graph().items():
        print(f"- {mod}: {', '.join(d.replace(PACKAGE + '.', '') for d in deps) or '(none)'}")
