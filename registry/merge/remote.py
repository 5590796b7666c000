"""Header-only views of Hub checkpoints, for dry runs that check remote inputs without the weights.

`config.json` and `tokenizer.json` are downloaded (small); safetensors headers are read with
range requests (`HfApi.get_safetensors_metadata`), so a 7B input costs a few MB. The result is a
`Checkpoint` with a tensor table but no readable data: the planner's architecture, tensor-name,
shape, dtype and vocabulary checks run on it; the data checks (NaN/Inf, same base) cannot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import CheckpointError, HubEntryNotFoundError
from registry.io.checkpoint import Checkpoint
from registry.io.safetensors import DTYPE_SIZES, TensorInfo

if TYPE_CHECKING:
    from registry.hub import HubClient


@dataclass(frozen=True)
class RemoteHeaders:
    """A header-only checkpoint of a Hub repo and what else the planner needs from it."""

    checkpoint: Checkpoint
    commit: str | None
    tokenizer_json: Path | None


def fetch_headers(repo_id: str, revision: str | None, *, hub: HubClient) -> RemoteHeaders:
    """Read config, tokenizer.json and every safetensors header of a Hub model repo.

    Args:
        repo_id: `org/name`.
        revision: branch, tag or commit (None: main).
        hub: the client (endpoint, token, cache).

    Returns:
        The header-only checkpoint, the commit it was read at, the tokenizer file (if any).

    Raises:
        HubError: the repo or revision does not exist, or the Hub cannot be reached.
        CheckpointError: no config.json, no safetensors weights, or a header that is not valid.
    """
    from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

    commit = hub.head_sha(repo_id, revision=revision)
    pinned = commit or revision
    label = f"{repo_id}@{pinned}" if pinned else repo_id
    try:
        config = json.loads(hub.download_file(repo_id, "config.json", revision=pinned).read_text(encoding="utf-8"))
    except HubEntryNotFoundError:
        raise CheckpointError(
            f"{label}: no config.json; a model repo needs its transformers config", path=label
        ) from None
    except ValueError as exc:  # JSONDecodeError
        raise CheckpointError(
            f"{label}: config.json is not valid JSON ({exc}); fix it in the repo or pick another revision", path=label
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{label}: config.json is not a JSON object; fix it in the repo", path=label)
    try:
        tokenizer = hub.download_file(repo_id, "tokenizer.json", revision=pinned)
    except HubEntryNotFoundError:
        tokenizer = None
    try:
        metadata = hub.safetensors_metadata(repo_id, revision=pinned)
    except (NotASafetensorsRepoError, SafetensorsParsingError) as exc:
        raise CheckpointError(
            f"{label}: cannot read safetensors headers remotely ({exc}); run the dry run after downloading the model",
            path=label,
        ) from None
    tensors: dict[str, TensorInfo] = {}
    for filename, file_meta in sorted(metadata.files_metadata.items()):
        for name, info in file_meta.tensors.items():
            if metadata.weight_map.get(name) != filename:
                continue
            if info.dtype not in DTYPE_SIZES:
                raise CheckpointError(
                    f"{label}/{filename}: tensor {name!r} has unknown dtype {info.dtype!r}; "
                    "re-save the checkpoint with a standard dtype",
                    path=label,
                    tensor=name,
                )
            begin, end = info.data_offsets
            tensors[name] = TensorInfo(
                name, info.dtype, tuple(info.shape), Path(f"hub:{label}/{filename}"), begin, end - begin
            )
    checkpoint = Checkpoint(path=Path(f"hub:{label}"), config=config, tensors=tensors, format="headers")
    return RemoteHeaders(checkpoint=checkpoint, commit=commit, tokenizer_json=tokenizer)
