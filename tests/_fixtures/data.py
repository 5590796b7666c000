"""Access to the real data in ../shared/data; tests that need it skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _candidate() -> Path:
    return Path(os.environ.get("MERGELING_SHARED_DATA", _DEFAULT))


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $MERGELING_SHARED_DATA; None when absent."""
    path = _candidate()
    return path if (path / "manifest.json").is_file() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"shared data not found (no manifest.json in {_candidate()}; set MERGELING_SHARED_DATA)")
    return path
