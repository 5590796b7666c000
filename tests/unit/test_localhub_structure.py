"""The embedded hub's structure: no import circles, and access decided in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "registry" / "localhub"


def _imports() -> dict[str, set[str]]:
    """module -> localhub modules it imports at run time (anywhere in it; TYPE_CHECKING blocks excluded)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("registry.localhub"):
                if node.module == "registry.localhub":
                    deps |= {a.name for a in node.names}
                else:
                    deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps
    return graph


def test_no_import_circles() -> None:
    graph = _imports()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for dep in graph.get(stack.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return seen

    circles = sorted((a, b) for a, deps in graph.items() for b in deps if a in reaches(b))
    assert circles == [], f"import circles: {circles}"


def test_access_rules_are_only_in_access_py() -> None:
    """Outside access.py (and auth.py, which defines what a token grants), no module tests a
    principal's rights or a repo's visibility or gate to decide access."""
    rule = re.compile(r"\.can_read_private\(|\.can_write\(|\.can_manage\(|\.role\s*[!=]=")
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in PACKAGE.glob("*.py")
        if path.name not in ("access.py", "auth.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if rule.search(line)
    ]
    assert offenders == [], "\n".join(offenders)


def test_every_refusal_has_a_status_in_the_one_table() -> None:
    """Refusals carry no HTTP status; the edge's exception handlers, built from `edge.STATUS_OF`,
    give each kind its status. Every `StorageError` the hub defines has a kind in that table (none
    falls through to the 500 handler), and no module but edge.py registers error handlers."""
    import importlib

    from registry.localhub import edge
    from registry.localhub.names import StorageError

    for path in PACKAGE.glob("*.py"):
        importlib.import_module(f"registry.localhub.{path.stem}")

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    handlers = edge.exception_handlers()
    for kind in subclasses(StorageError)[1:]:
        nearest = next(c for c in kind.__mro__ if c in handlers)
        assert nearest is not StorageError and issubclass(nearest, StorageError), kind
    assert set(edge.STATUS_OF) <= set(handlers)
    registering = [
        p.name for p in PACKAGE.glob("*.py") if re.search(r"exception_handlers|ExceptionMiddleware", p.read_text())
    ]
    assert registering == ["edge.py"], registering
