"""The strict safetensors reader and the deterministic sharded writer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from registry.errors import CheckpointError, RecipeError
from registry.io import ShardedWriter, open_checkpoint, parse_size, read_header
from registry.io.safetensors import SafetensorsFile, dtype_code

TENSORS = {
    "a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    "b.bias": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    "c.count": torch.arange(5, dtype=torch.int64),
    "d.scalar": torch.tensor(3.0, dtype=torch.float16),
    "e.empty": torch.zeros((0, 4), dtype=torch.float32),
}


def _raw(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_reads_what_the_reference_library_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(TENSORS, path, metadata={"format": "pt"})
    infos, metadata = read_header(path)
    assert metadata == {"format": "pt"}
    assert infos["a.weight"].shape == (3, 4) and infos["a.weight"].dtype == "F32"
    with SafetensorsFile(path) as handle:
        for name, tensor in TENSORS.items():
            got = handle.read(name)
            assert got.dtype == tensor.dtype and torch.equal(got, tensor)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: b"\x01\x02", "too short"),
        (lambda: struct.pack("<Q", 10**6) + b"{}", "does not fit"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4), "truncated"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, b"\0" * 12), "lies"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "gap of 4"),
        (
            lambda: _raw(
                {
                    "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                },
                b"\0" * 8,
            ),
            "overlaps",
        ),
        (lambda: _raw({"x": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2), "unknown dtype"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""), "non-negative"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8), "begin <= end"),
        (lambda: _raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9), "trailing"),
        (lambda: struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
        (lambda: _raw({"__metadata__": {"a": 1}}, b""), "__metadata__"),
    ],
)
def test_invalid_headers_are_refused(tmp_path: Path, make, needle: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make())
    with pytest.raises(CheckpointError) as info:
        read_header(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_truncated_real_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(TENSORS, path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(path)


def _specs(tensors: dict[str, torch.Tensor]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(n, dtype_code(t.dtype), tuple(t.shape)) for n, t in tensors.items()]


@pytest.mark.parametrize("shard_size", [10**9, 40])
def test_writer_round_trip_and_determinism(tmp_path: Path, shard_size: int) -> None:
    outputs = []
    for run in ("one", "two"):
        out = tmp_path / run
        out.mkdir()
        writer = ShardedWriter(out, _specs(TENSORS), shard_size=shard_size)
        for name in reversed(list(TENSORS)):  # any write order gives the same bytes
            writer.write(name, TENSORS[name])
        files = writer.close()
        outputs.append({f.name: f.read_bytes() for f in files})
        (out / "config.json").write_text("{}")
        with open_checkpoint(out) as ckpt:
            assert set(ckpt.tensors) == set(TENSORS)
            for name, tensor in TENSORS.items():
                assert torch.equal(ckpt.read(name), tensor)
        for file in files:
            if file.suffix == ".safetensors":
                load_file(file)  # the reference reader accepts our files
    assert outputs[0] == outputs[1]
    if shard_size == 40:
        index = json.loads(outputs[0]["model.safetensors.index.json"])
        assert len(set(index["weight_map"].values())) > 1
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in TENSORS.values())
    else:
        assert list(outputs[0]) == ["model.safetensors"]


def test_writer_refuses_wrong_tensor_and_missing_writes(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path, _specs(TENSORS), shard_size=10**9)
    with pytest.raises(Exception, match="planned"):
        writer.write("a.weight", TENSORS["a.weight"].double())
    with pytest.raises(Exception, match="not written"):
        writer.close()


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500mb") == 500 * 10**6
    assert parse_size("1024") == 1024
    for bad in ("five", "0", "-1GB", "5XB"):
        with pytest.raises(RecipeError, match="5GB"):
            parse_size(bad)


def test_bin_only_through_weights_only_load(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text("{}")
    torch.save({"w": torch.ones(2, 2)}, good / "pytorch_model.bin")
    with open_checkpoint(good) as ckpt:
        assert torch.equal(ckpt.read("w"), torch.ones(2, 2))
        assert ckpt.format == "bin"

    class Payload:
        def __reduce__(self):  # would create a file if it were ever unpickled
            return (Path.touch, (tmp_path / "pwned",))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    torch.save({"w": torch.ones(1), "x": Payload()}, bad / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        open_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_without_weights_or_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        open_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights found"):
        open_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match="gone.safetensors, which is missing"):
        open_checkpoint(tmp_path)


def test_model_file_preferred_and_ambiguous_files_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    save_file({"lora_A": torch.ones(2)}, tmp_path / "adapter_model.safetensors")
    with open_checkpoint(tmp_path) as ckpt:
        assert set(ckpt.tensors) == {"w"}
    (tmp_path / "model.safetensors").rename(tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError, match="several .safetensors files"):
        open_checkpoint(tmp_path)


def test_legacy_bin_format_loads_without_mmap(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.arange(4.0)}, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with open_checkpoint(tmp_path) as ckpt:
        assert torch.equal(ckpt.read("w"), torch.arange(4.0))


def test_sharded_bin_with_index(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(3)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with open_checkpoint(tmp_path) as ckpt:
        assert set(ckpt.tensors) == {"a", "b"} and ckpt.format == "bin"
        assert torch.equal(ckpt.read("b"), torch.zeros(3))


def test_inconsistent_shard_index_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "model-00002-of-00002.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match=r"says 'a' is in model-00002-of-00002\.safetensors.*re-download"):
        open_checkpoint(tmp_path)
    index.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a valid shard index.*re-download the checkpoint"):
        open_checkpoint(tmp_path)
    index.unlink()
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(CheckpointError, match="config is not a JSON object; re-save the model"):
        open_checkpoint(tmp_path)
