"""What a merge writes beside the weights never carries code, and remote headers are bounded.

Inputs with custom code (`auto_map` in their configs, `*.py` files beside them) are merged from a
local directory and from a real embedded hub on 127.0.0.1: the output has no `auto_map` in any
config and no `*.py` file. A safetensors header over the size-derived bound is refused unread.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from safetensors.torch import load_file

from registry.errors import CheckpointError
from registry.io.safetensors import header_bound, read_header
from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe

AUTO_MAP = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM", "AutoTokenizer": ["tokenizer_evil.EvilTok", None]}


def _with_code(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
        path = dst / name
        data = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**data, "auto_map": AUTO_MAP}))
    for name in ("modeling_evil.py", "tokenizer_evil.py", "configuration_evil.py"):
        (dst / name).write_text("raise SystemExit('custom code ran')\n")
    return dst


def _recipe(base: str, ct: str, sft: str) -> dict:
    return {
        "merge_method": "ties",
        "base_model": base,
        "models": [{"model": ct, "parameters": {"density": 0.5}}, {"model": sft, "parameters": {"density": 0.5}}],
    }


def _assert_no_code(out: Path) -> None:
    assert not list(out.rglob("*.py")), list(out.rglob("*.py"))
    for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
        data = json.loads((out / name).read_text())
        assert "auto_map" not in data, name


def test_local_inputs_with_code_give_no_code(tiny_family: DemoFamily, tmp_path: Path) -> None:
    refs = [str(_with_code(getattr(tiny_family, n), tmp_path / n)) for n in ("base", "ct", "sft")]
    out = tmp_path / "out"
    run_merge(plan_merge(parse_recipe(_recipe(*refs))), out=out, device="cpu", progress=False)
    _assert_no_code(out)
    tok_in = json.loads((tmp_path / "base" / "tokenizer_config.json").read_text())
    tok_out = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_out == {k: v for k, v in tok_in.items() if k != "auto_map"}  # the rest unchanged


def test_hub_inputs_with_code_give_no_code(hub, tiny_family: DemoFamily, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = hub.client(cache="code-cache")
    for name in ("base", "ct", "sft"):
        client.create_repo(f"lab/code-{name}", exist_ok=True)
        client.upload_folder(_with_code(getattr(tiny_family, name), tmp_path / name), f"lab/code-{name}")
    plan = plan_merge(parse_recipe(_recipe("lab/code-base", "lab/code-ct", "lab/code-sft")), hub=client)
    for src in plan.sources:
        assert not list(src.path.glob("*.py")), src.ref  # type: ignore[union-attr]  # never downloaded
    out = tmp_path / "out"
    run_merge(plan, out=out, device="cpu", progress=False)
    _assert_no_code(out)


def _padded(src: Path, dst: Path, pad: int) -> Path:
    """`src` re-written with `pad` spaces in its (valid) JSON header."""
    raw = src.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + length] + b" " * pad
    dst.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + length :])
    return dst


def test_header_over_the_bound_refused_unread_local_and_remote(hub, tiny_family: DemoFamily, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    size = (tiny_family.ct / "model.safetensors").stat().st_size
    assert header_bound(size + (2 << 20)) == 1 << 20  # a tiny file: the 1 MiB floor; never over 16 MiB
    assert header_bound(10**12) == 16 * 1024 * 1024
    folder = tmp_path / "padded"
    shutil.copytree(tiny_family.ct, folder)
    _padded(tiny_family.ct / "model.safetensors", folder / "model.safetensors", (1 << 20) + 10)
    with pytest.raises(CheckpointError, match=r"over the 1048576-byte bound.*refused unread"):
        read_header(folder / "model.safetensors")
    client = hub.client(cache="bound-cache")
    client.create_repo("lab/bound-ct", exist_ok=True)
    client.upload_folder(folder, "lab/bound-ct")
    for name in ("base", "sft"):
        client.create_repo(f"lab/bound-{name}", exist_ok=True)
        client.upload_folder(getattr(tiny_family, name), f"lab/bound-{name}")
    recipe = parse_recipe(_recipe("lab/bound-base", "lab/bound-ct", "lab/bound-sft"))
    with pytest.raises(
        CheckpointError, match=r"lab/bound-ct@\w+/model\.safetensors: .*over the 1048576-byte bound.*unread"
    ) as info:
        plan_merge(recipe, offline=True, remote_headers=True, hub=client)
    assert "\n" not in str(info.value)
    # under the bound the same padding is read (a valid header): the check is on the size, not the padding
    _padded(tiny_family.ct / "model.safetensors", folder / "model.safetensors", 1000)
    client.upload_folder(folder, "lab/bound-ct")
    plan = plan_merge(recipe, offline=True, remote_headers=True, hub=client)
    assert len(plan.tensors) == len(load_file(tiny_family.base / "model.safetensors"))
