"""Ctrl-C in the middle of `registry merge` (a real process, a real SIGINT) leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests._fixtures.models import write_stack_family

REPO_ROOT = Path(__file__).resolve().parents[2]


def _family(root: Path, tensors: int = 48) -> dict:
    write_stack_family(root, tensors=tensors, seed=1)
    return {
        "merge_method": "ties_sv",
        "base_model": str(root / "base"),
        "models": [
            {"model": str(root / "a"), "role": "ct", "parameters": {"density": 0.2}},
            {"model": str(root / "b"), "role": "sft", "parameters": {"density": 0.2}},
        ],
        "parameters": {"slack": 0.1},
    }


@pytest.mark.slow
@pytest.mark.parametrize("kernel_cache", ["warm", "cold"])
def test_sigint_mid_merge_leaves_nothing(tmp_path: Path, kernel_cache: str) -> None:
    """Cold: the fused kernels are being compiled when Ctrl-C comes; the process must not wait for
    anything it started (it once did: the kernels' worker threads were joined at exit)."""
    env = dict(os.environ)
    if kernel_cache == "cold":
        env["MERGELING_CACHE"] = str(tmp_path / "cache")  # empty: the kernels compile first
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_family(tmp_path / "models")))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from registry.cli import main; main()",
            "merge",
            str(recipe),
            "--out",
            str(work / "merged"),
            "--device",
            "cpu",
            "--shard-size",
            "20MB",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    # Wait until shards are being written into the temporary directory, then interrupt.
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(work.glob(".merged.partial-*/model-*.safetensors"))
        if partial:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the merge finished before it could be interrupted"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=8)  # it exits in about a second
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"still running 8 s after Ctrl-C:\n{stderr[-2000:]}")
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stderr
    assert list(work.iterdir()) == []


def test_partial_left_by_a_killed_merge_is_removed(tiny_family, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stale = tmp_path / f".merged.partial-{dead.pid}"
    (stale / "junk").mkdir(parents=True)
    data = {
        "merge_method": "ties",
        "base_model": str(tiny_family.base),
        "models": [{"model": str(tiny_family.ct)}, {"model": str(tiny_family.sft)}],
    }
    run_merge(plan_merge(parse_recipe(data)), out=tmp_path / "merged", device="cpu", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
