"""The layering rules of docs/architecture.md, checked on the import statements (ast) of registry/, bot/, space/.

Every import counts: top-level, inside functions and under `TYPE_CHECKING` (a lazy import is still
an arrow). The checker is also run on small planted trees, so each rule is shown to fail when broken.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

METHODS = "registry.merge.methods"
KERNELS = "registry.merge.kernels"
# Methods: torch, pydantic (their parameter models), the kernels, their siblings (base, plugin, shared
# cores such as ties), registry.errors, and the pure stdlib (typing, math, hashlib, dataclasses...).
METHOD_ALLOWED = ("torch", "pydantic", METHODS, KERNELS, "registry.errors")
# The stdlib that brings threads, processes, C calls or the file system belongs in the kernels or the engine.
METHOD_BANNED_STDLIB = {"ctypes", "threading", "concurrent", "multiprocessing", "queue", "subprocess", "os", "socket"}
# Kernels: torch, numpy, ctypes, the stdlib, and each other; nothing else of the registry.
KERNEL_ALLOWED = ("torch", "numpy", KERNELS)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The modules `path` imports (resolved: `from pkg import mod` is `pkg.mod` when that is a module)."""
    name = module_name(path, root)
    package = name if is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                target = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    found.discard("__future__")
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py")) if "__pycache__" not in p.parts]
    modules = {module_name(p, root) for p in files}
    return {module_name(p, root): imports_of(p, root, modules) for p in files}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def cycles(graph: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """Strongly connected components of more than one module (or a self-import) under `prefix` (Tarjan)."""
    nodes = sorted(n for n in graph if _under(n, prefix))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph or not _under(w, prefix):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule, one line each."""
    found = []
    stdlib = set(sys.stdlib_module_names)
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            top = target.partition(".")[0]
            if _under(module, "registry") and top in ("bot", "space"):
                found.append(f"{module} imports {target}: registry never imports bot or space")
            if _under(module, METHODS):
                if top in stdlib:
                    if top in METHOD_BANNED_STDLIB:
                        found.append(f"{module} imports {target}: threads, C calls and files belong in the kernels")
                elif not any(_under(target, allowed) for allowed in METHOD_ALLOWED):
                    found.append(f"{module} imports {target}: a method imports only torch and the kernels")
            if _under(module, KERNELS) and top not in stdlib:
                if not any(_under(target, allowed) for allowed in KERNEL_ALLOWED):
                    found.append(f"{module} imports {target}: a kernel imports torch, numpy and other kernels only")
    for component in cycles(graph, "registry.merge"):
        found.append(f"import circle in registry.merge: {' <-> '.join(component)}")
    return found


def test_the_project_keeps_its_layering_rules() -> None:
    graph = import_graph(ROOT, ("registry", "bot", "space"))
    assert "registry.merge.kernels.fused" in graph and "registry.merge.methods.ties" in graph  # the map is real
    assert "registry.merge.kernels.fused" in graph["registry.merge.methods.ties"]
    assert violations(graph) == []


def _plant(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in {p.parent for p in root.rglob("*.py")}:
        (folder / "__init__.py").touch()
    return import_graph(root, ("registry", "bot"))


LEGAL = {
    "registry/merge/methods/good.py": "import math\nimport torch\nfrom registry.merge.kernels.topk import Cut\n"
    "from .plugin import X\nfrom pydantic import BaseModel\n",
    "registry/merge/methods/plugin.py": "X = 1\n",
    "registry/merge/kernels/topk.py": "import ctypes\nimport numpy\nimport torch\nCut = 1\n",
}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, []),
        (
            {"registry/merge/methods/bad.py": "import numpy as np\n"},
            ["registry.merge.methods.bad imports numpy: a method imports only torch and the kernels"],
        ),
        (
            {"registry/merge/methods/bad.py": "def f():\n    from registry.io import checkpoint\n"},
            ["registry.merge.methods.bad imports registry.io: a method imports only torch and the kernels"],
        ),
        (
            {"registry/merge/methods/bad.py": "from concurrent.futures import Future\n"},
            ["registry.merge.methods.bad imports concurrent.futures: threads, C calls and files belong in the kernels"],
        ),
        (
            {"registry/merge/kernels/bad.py": "from registry.merge.methods.plugin import X\n"},
            [
                "registry.merge.kernels.bad imports registry.merge.methods.plugin: "
                "a kernel imports torch, numpy and other kernels only"
            ],
        ),
        (
            {"registry/hub.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bot.queue\n"},
            ["registry.hub imports bot.queue: registry never imports bot or space"],
        ),
        (
            {
                "registry/merge/plan.py": "def f():\n    from registry.merge.outputs import FILES\n",
                "registry/merge/outputs.py": "from registry.merge.plan import MergePlan\n",
            },
            ["import circle in registry.merge: registry.merge.outputs <-> registry.merge.plan"],
        ),
        (
            {
                "registry/merge/a.py": "from registry.merge import b\n",
                "registry/merge/b.py": "from . import c\n",
                "registry/merge/c.py": "import registry.merge.a\n",
            },
            ["import circle in registry.merge: registry.merge.a <-> registry.merge.b <-> registry.merge.c"],
        ),
        # A circle outside registry.merge, and bot importing registry, are not this test's business.
        ({"registry/x.py": "import registry.y\n", "registry/y.py": "import registry.x\n"}, []),
        ({"bot/app.py": "import registry.merge.plan\n"}, []),
    ],
)
def test_the_checker_catches_each_broken_rule(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert violations(_plant(tmp_path, {**LEGAL, **files})) == expected
