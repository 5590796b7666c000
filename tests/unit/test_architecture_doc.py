"""docs/architecture.md names every module of `registry/` (it missed six before it moved here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_registry_module_is_on_the_map() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    words = set(re.findall(r"[\w.]+", text))
    missing = []
    for path in sorted((ROOT / "registry").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        if path.name not in words:
            missing.append(str(path.relative_to(ROOT)))
    for folder in sorted(p for p in (ROOT / "registry").iterdir() if p.is_dir() and p.name != "__pycache__"):
        if f"{folder.name}/" not in text:
            missing.append(f"{folder.relative_to(ROOT)}/")
    assert not missing, f"add these to docs/architecture.md: {missing}"
