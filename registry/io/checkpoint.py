"""A model directory as a set of named tensors: safetensors shards (with or without an index), or
`.bin` files loaded only through `torch.load(weights_only=True)`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import CheckpointError
from registry.io.safetensors import SafetensorsFile, TensorInfo, dtype_code

if TYPE_CHECKING:
    import torch

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


@dataclass
class Checkpoint:
    """An open checkpoint directory. Use as a context manager; `read` is thread-safe."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]
    format: str  # "safetensors" | "bin" | "headers" (a remote view: tensor table only, no data)
    _files: dict[Path, SafetensorsFile] = field(default_factory=dict, repr=False)
    _bin: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor `name` as a CPU tensor in its stored dtype (read into the uint8 buffer `out` when given).

        Raises:
            KeyError: no such tensor.
            CheckpointError: the data cannot be read.
        """
        if self.format == "bin":
            return self._bin[name]
        if self.format == "headers":
            raise CheckpointError(
                f"{self.path}: a header-only view has no tensor data ({name!r})", path=str(self.path), tensor=name
            )
        info = self.tensors[name]
        return self._files[info.path].read(name, out)

    def map(self, name: str) -> torch.Tensor:
        """The tensor `name` as a read-only view of its mapped safetensors file (see
        `SafetensorsFile.map`), for CPU merges, which then never copy their inputs; what `read`
        returns where a tensor has no file to map (a pickled checkpoint, an adapted view).

        Raises:
            KeyError: no such tensor.
            CheckpointError: as `read`.
        """
        if self.format != "safetensors" or type(self).read is not Checkpoint.read:
            return self.read(name)
        return self._files[self.tensors[name].path].map(name)

    def evict(self, name: str) -> None:
        """After a `map`ped tensor was used: drop its pages from this process (`SafetensorsFile.evict`)."""
        if self.format == "safetensors" and type(self).read is Checkpoint.read:
            self._files[self.tensors[name].path].evict(name)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._bin.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a model directory.

    Raises:
        CheckpointError: missing or not a JSON object.
    """
    file = path / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: no config.json; a model directory needs its transformers config (save_pretrained writes it)",
            path=str(path),
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot read config ({exc}); re-save the model", path=str(file)) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{file}: config is not a JSON object; re-save the model with save_pretrained", path=str(file)
        )
    return data


def weight_files(path: Path) -> tuple[str, list[Path], dict[str, Path] | None]:
    """Find the weights of a model directory: (format, files, weight_map or None).

    Raises:
        CheckpointError: no weights, or an index naming a missing shard.
    """
    for fmt, index_name in (("safetensors", ST_INDEX), ("bin", BIN_INDEX)):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                mapping = {str(k): path / str(v) for k, v in weight_map.items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(
                    f"{index}: not a valid shard index ({exc!r}); re-download the checkpoint", path=str(index)
                ) from None
            files = sorted(set(mapping.values()))
            for file in files:
                if not file.is_file():
                    raise CheckpointError(
                        f"{index} names shard {file.name}, which is missing; download the whole checkpoint",
                        path=str(file),
                    )
            return fmt, files, mapping
    # Without an index, transformers reads model.safetensors / pytorch_model.bin only; other
    # files beside them (adapters, consolidated copies) are not part of the model.
    for fmt, name in (("safetensors", "model.safetensors"), ("bin", "pytorch_model.bin")):
        if (path / name).is_file():
            return fmt, [path / name], None
    single = sorted(path.glob("*.safetensors"))
    if len(single) == 1:
        return "safetensors", single, None
    if len(single) > 1:
        raise CheckpointError(
            f"{path}: several .safetensors files ({', '.join(f.name for f in single[:3])}, ...) and no "
            f"{ST_INDEX}; add the index or keep one model file",
            path=str(path),
        )
    raise CheckpointError(
        f"{path}: no weights found (model.safetensors, a shard index, or pytorch_model.bin); "
        "check the path or download the checkpoint",
        path=str(path),
    )


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a model directory: config plus validated tensor table.

    Safetensors: only headers are read here (tensors on `read`). `.bin`: loaded (memory-mapped)
    with `torch.load(weights_only=True)`, since a pickle has no separate header.

    Args:
        path: the directory.

    Returns:
        The open checkpoint (close it, or use `with`).

    Raises:
        CheckpointError: unreadable, invalid, truncated, duplicated or unsafe weights.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory; give a model directory or a Hub repo id", path=str(path))
    config = read_config(path)
    fmt, files, mapping = weight_files(path)
    ckpt = Checkpoint(path=path, config=config, tensors={}, format=fmt)
    try:
        if fmt == "safetensors":
            _open_safetensors(ckpt, files, mapping)
        else:
            _load_bin(ckpt, files, mapping)
    except BaseException:
        ckpt.close()
        raise
    return ckpt


def _open_safetensors(ckpt: Checkpoint, files: list[Path], mapping: dict[str, Path] | None) -> None:
    for file in files:
        handle = SafetensorsFile(file)
        ckpt._files[file] = handle
        for name, info in handle.tensors.items():
            if mapping is not None and mapping.get(name) != file:
                continue  # the index is authoritative; a stray copy elsewhere is ignored
            if name in ckpt.tensors:
                raise CheckpointError(
                    f"{ckpt.path}: tensor {name!r} is in both {ckpt.tensors[name].path.name} and {file.name}; "
                    "remove the stale file (two saves mixed in one directory)",
                    path=str(file),
                    tensor=name,
                )
            ckpt.tensors[name] = info
    if mapping is not None:
        for name, file in mapping.items():
            if name not in ckpt.tensors:
                raise CheckpointError(
                    f"{ST_INDEX} in {ckpt.path} says {name!r} is in {file.name}, but that shard does not hold it; "
                    "re-download the checkpoint (index and shards are from different saves)",
                    path=str(file),
                    tensor=name,
                )


def _load_bin(ckpt: Checkpoint, files: list[Path], mapping: dict[str, Path] | None) -> None:
    import pickle

    import torch

    for file in files:
        try:
            state = _torch_load(file)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
            reason = _pickle_reason(str(exc)) or type(exc).__name__
            raise CheckpointError(
                f"{file}: refused: not loadable with torch.load(weights_only=True) ({reason}); "
                "nothing was unpickled. Convert it to safetensors with a trusted tool first",
                path=str(file),
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(
                f"{file}: not a state dict of tensors; give a checkpoint saved with save_pretrained", path=str(file)
            )
        for name, tensor in state.items():
            if mapping is not None and mapping.get(name) != file:
                continue
            if name in ckpt.tensors:
                raise CheckpointError(
                    f"{ckpt.path}: tensor {name!r} appears twice; re-download the checkpoint",
                    path=str(file),
                    tensor=name,
                )
            tensor = tensor.contiguous()
            ckpt._bin[name] = tensor
            nbytes = tensor.numel() * tensor.element_size()
            ckpt.tensors[name] = TensorInfo(name, dtype_code(tensor.dtype), tuple(tensor.shape), file, 0, nbytes)


def _pickle_reason(text: str) -> str:
    """The useful part of torch's weights-only refusal (it is long, multi-line, with ANSI codes)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please | To | Check |$)", text, flags=re.MULTILINE)
    if match:
        return match.group(1).strip()
    return text.strip().splitlines()[0] if text.strip() else ""


def _torch_load(file: Path) -> object:
    """torch.load(weights_only=True), memory-mapped when the file allows it (zip format)."""
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    # Legacy (pre-zip) .bin files cannot be memory-mapped: load them into memory, still weights-only.
    return torch.load(file, map_location="cpu", weights_only=True)
