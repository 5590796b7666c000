"""Header-only views of Hub checkpoints, for dry runs that check remote inputs without the weights.

`config.json` and `tokenizer.json` are downloaded (small); safetensors headers are read with
HTTP range requests, so a 7B input costs a few MB. A header longer than
`registry.io.safetensors.header_bound(declared file size)` (at most 16 MiB) is refused before it is
read, as the local reader does. The result is a
`Checkpoint` with a tensor table but no readable data: the planner's architecture, tensor-name,
shape, dtype and vocabulary checks run on it; the data checks (NaN/Inf, same base) cannot.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import CheckpointError, HubEntryNotFoundError
from registry.io.checkpoint import Checkpoint
from registry.io.safetensors import DTYPE_SIZES, TensorInfo, header_bound

_FIRST_READ = 100_000  # most headers fit: one request (huggingface_hub reads the same first)
_CONTENT_RANGE = re.compile(r"bytes\s+\d+-\d+/(\d+)")

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
    tensors: dict[str, TensorInfo] = {}
    for filename, names in sorted(_weight_files(hub, repo_id, pinned, label).items()):
        for name, info in read_remote_header(hub, repo_id, filename, revision=pinned, label=label).items():
            if names is None or names.get(name) == filename:
                tensors[name] = info
    checkpoint = Checkpoint(path=Path(f"hub:{label}"), config=config, tensors=tensors, format="headers")
    return RemoteHeaders(checkpoint=checkpoint, commit=commit, tokenizer_json=tokenizer)


def _weight_files(hub: HubClient, repo_id: str, revision: str | None, label: str) -> dict[str, dict[str, str] | None]:
    """The safetensors files to read: `model.safetensors`, else the files of the index (with its weight map)."""
    files = [f for f in hub.list_files(repo_id, revision=revision) if "/" not in f]
    if "model.safetensors" in files:
        return {"model.safetensors": None}
    index = "model.safetensors.index.json"
    if index not in files:
        raise CheckpointError(
            f"{label}: no model.safetensors or {index}; run the dry run after downloading the model", path=label
        )
    try:
        weight_map = json.loads(hub.download_file(repo_id, index, revision=revision).read_text(encoding="utf-8"))[
            "weight_map"
        ]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{label}: {index} has no valid weight_map; fix it in the repo", path=label) from None
    out: dict[str, dict[str, str] | None] = {}
    for file in sorted(set(weight_map.values())):
        if "/" in file or not file.endswith(".safetensors"):
            raise CheckpointError(f"{label}: {index} names {file!r}, not a root .safetensors file", path=label)
        out[file] = weight_map
    return out


def read_remote_header(
    hub: HubClient, repo_id: str, filename: str, *, revision: str | None, label: str
) -> dict[str, TensorInfo]:
    """One safetensors header over HTTP range requests, its length checked against the file's
    declared size before it is read (`header_bound`: at most 16 MiB).

    Raises:
        CheckpointError: a header over the bound, not valid, or lying about offsets; HubError as ours.
    """
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    from registry.hub_errors import convert_error

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub.endpoint)
    headers = build_hf_headers(token=hub.api.token, library_name="mergeling", headers=hub.api.headers)
    where = f"{label}/{filename}"

    def get(first: int, last: int) -> tuple[bytes, int | None]:
        try:
            with get_session().stream("GET", url, headers={**headers, "range": f"bytes={first}-{last}"}) as response:
                hf_raise_for_status(response)
                match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                size = int(match.group(1)) if match else None
                if size is None and response.status_code == 200:  # no range support: the whole file
                    declared = response.headers.get("content-length")
                    size = int(declared) if declared and declared.isdigit() else None
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= last - first + 1:
                        break
                return body[: last - first + 1], size
        except Exception as exc:
            converted = convert_error(
                exc, what="read safetensors headers", endpoint=hub.endpoint, repo_id=repo_id, revision=revision
            )
            if converted is None:
                raise
            raise converted from exc

    head, size = get(0, _FIRST_READ + 7)
    if size is None:
        raise CheckpointError(f"{where}: the Hub did not declare the file size; cannot bound its header", path=label)
    if len(head) < 8:
        raise CheckpointError(f"{where}: file is {size} bytes, too short for a safetensors header", path=label)
    (length,) = struct.unpack("<Q", head[:8])
    bound = header_bound(size)
    if length > bound or 8 + length > size:
        raise CheckpointError(
            f"{where}: safetensors header of {length} bytes is over the {bound}-byte bound for a file of {size} "
            "bytes (refused unread); re-save the checkpoint with safetensors",
            path=label,
        )
    raw = head[8 : 8 + length] if length <= len(head) - 8 else get(8, 8 + length - 1)[0]
    return _parse_header(raw, where, label, data_size=size - 8 - length)


def _parse_header(raw: bytes, where: str, label: str, *, data_size: int) -> dict[str, TensorInfo]:
    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"{where}: {reason}; re-save the checkpoint with safetensors", path=label)

    try:
        header: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    header.pop("__metadata__", None)
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in DTYPE_SIZES:
            raise bad(f"tensor {name!r} has unknown dtype {code!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
            or offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[code]
        ):
            raise bad(f"tensor {name!r}: data_offsets {offsets!r} do not fit its shape and the file")
        tensors[name] = TensorInfo(name, code, tuple(shape), Path(f"hub:{where}"), offsets[0], offsets[1] - offsets[0])
    return tensors
