"""Shared fixtures. Fixture modules live in tests/_fixtures/ (one per capability)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests._fixtures.data",
    "tests._fixtures.models",
    "tests._fixtures.hub",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

# The Hub client reads these at import; keep every test offline and quiet.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
