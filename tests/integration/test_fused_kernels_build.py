"""The fused C kernels: built once into a cache, reused, and a merge without a compiler still works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from registry.merge.kernels import fused_kernels
from tests._fixtures.models import write_stack_family

REPO_ROOT = Path(__file__).resolve().parents[2]

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler here")


@needs_cc
def test_built_once_then_reused(tmp_path: Path) -> None:
    first = fused_kernels.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    again = fused_kernels.build(tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp  # a cache hit, not a rebuild
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial build left behind
    kernels = fused_kernels.Kernels(first)
    bits = np.array([0x3F80, 0x7F80, 0xFFC0, 0x0001], np.uint16)  # 1.0, +Inf, NaN, a subnormal
    assert kernels.nonfinite(bits) == 2
    with pytest.raises(TypeError, match="must all be uint16 or all uint32"):
        kernels.find_cut(bits, bits.astype(np.uint32), 1, 4, 8)
    with pytest.raises(TypeError, match="of one length"):
        kernels.find_cut(bits, bits[:3], 1, 4, 8)  # the C code would read past the shorter one


def test_missing_compiler_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(fused_kernels.KernelError, match="no C compiler \\('no-such-compiler-here' is not on PATH\\)"):
        fused_kernels.build(tmp_path)


def test_failing_compiler_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "fakecc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo fakecc 1.0; exit 0; }\necho 'fakecc: out of luck' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    cache = tmp_path / "cache"
    with pytest.raises(fused_kernels.KernelError, match="failed on fused_kernels.c:\nfakecc: out of luck"):
        fused_kernels.build(cache)
    assert list(cache.iterdir()) == []


def _merge(recipe: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from registry.cli import main; main()", "merge", str(recipe), "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_cc
def test_merge_without_a_compiler_takes_the_torch_path_to_the_same_bytes(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_stack_family(models, tensors=3, rows=600, cols=512, seed=3)  # > 2**18 entries: the sampled cut
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": str(models / "base"),
                "dtype": "bfloat16",
                "models": [
                    {"model": str(models / "a"), "parameters": {"density": 0.2}},
                    {"model": str(models / "b"), "parameters": {"density": 0.3, "weight": 0.7}},
                ],
            }
        )
    )
    env = dict(os.environ, MERGELING_CACHE=str(tmp_path / "cache"))
    fused = _merge(recipe, tmp_path / "fused", env)
    assert fused.returncode == 0, fused.stderr[-2000:]
    assert "kernels are off" not in fused.stderr
    assert list((tmp_path / "cache" / "kernels").glob("fused_kernels-*.so"))  # built there, once

    no_cc = dict(env, CC="no-such-compiler-here", MERGELING_CACHE=str(tmp_path / "c2"))
    plain = _merge(recipe, tmp_path / "plain", no_cc)
    assert plain.returncode == 0, plain.stderr[-2000:]
    said = " ".join(plain.stderr.split())  # the log handler wraps lines
    assert "The fused CPU merge kernels are off (no C compiler ('no-such-compiler-here' is not on PATH))" in said
    assert "Install a C compiler (e.g. apt-get install gcc) or point CC at one." in said
    shards = sorted(p.name for p in (tmp_path / "fused").glob("*.safetensors"))
    assert shards and shards == sorted(p.name for p in (tmp_path / "plain").glob("*.safetensors"))
    for name in shards:
        assert (tmp_path / "fused" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
