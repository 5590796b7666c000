"""`registry demo`: the bot journey end to end (hub and bot as subprocesses); a second run reuses the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HOME=str(workdir / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "-q", "demo", "--workdir", str(workdir),
           "--lab-steps", "4", "--eval-limit", "2", "--timeout", "240"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480, cwd=workdir.parent)


@pytest.mark.slow
def test_demo_pushes_a_ct_and_prints_the_merged_model_its_table_and_the_comment(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    first = _demo(workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "Merged model: http://127.0.0.1:" in out and "/mergebot/alice__tiny-ct-ben_Beng-tiny-sft-ties-sv" in out
    assert "| metric | CT" in out and "flores_ben_Beng bits_per_byte" in out
    assert "The bot's comment on" in out and "### Merged revision" in out
    assert "Training lab-size" in first.stderr and "Push -> published in" in first.stderr
    second = _demo(workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Training lab-size" not in second.stderr  # the models are reused
    assert "Merged model:" in second.stdout
    assert not any((workdir / "bot" / "staging").iterdir())
