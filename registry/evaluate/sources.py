"""Where the model and the data come from, and their identities.

A model is a local directory (identified by a hash of its weight, config and tokenizer files) or a
Hub repo `owner/name[@revision]` (identified by the resolved commit sha). Data is a local
directory in the `../shared/data` layout, or a Hub dataset repo with the same layout.

Hub access goes through `registry.hub.HubClient` (endpoint and token injected; its errors are
already our `Hub*` errors).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import DataNotFoundError, EvaluationError
from registry.evaluate.records import ModelIdentity
from registry.progress import progress_bar

if TYPE_CHECKING:
    from registry.hub import HubClient

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{40}$")

# Files whose bytes decide what a model computes (weights, shapes, tokenization).
_IDENTITY_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.safetensors.index.json",
    "*.bin.index.json",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its local directory and its pinned identity."""

    path: Path
    identity: ModelIdentity


def hash_model_files(model_dir: Path, *, progress: bool = False) -> str:
    """sha256 over the names and bytes of the files that define a local model.

    Args:
        model_dir: an HF-layout checkpoint directory.
        progress: show a byte progress bar on stderr.

    Returns:
        The hex digest.

    Raises:
        DataNotFoundError: the directory holds no weight files.
    """
    files = sorted({p for pattern in _IDENTITY_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise DataNotFoundError(
            f"No weights (*.safetensors or *.bin) in {model_dir}; pass a checkpoint directory or a Hub repo id.",
            path=str(model_dir),
        )
    digest = hashlib.sha256()
    with progress_bar(
        total=sum(p.stat().st_size for p in files), desc="hash weights", unit="B", unit_scale=True, enabled=progress
    ) as bar:
        for path in files:
            digest.update(f"\0{path.name}\0".encode())
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    bar.update(len(chunk))
    return digest.hexdigest()


def model_files_to_fetch(files: Iterable[str]) -> list[str]:
    """The files of a model repo evaluation needs: configs, tokenizer, and one weights format.

    Root-level files only. Safetensors when the repo has them (never also the `.bin` twins,
    which double a 7B download), else `.bin`; optimizer states, other frameworks' weights,
    media and checkpoint subfolders are skipped.

    Args:
        files: every path in the repo.

    Returns:
        The paths to download, sorted.
    """
    files = list(files)
    weights = ".safetensors" if any(f.endswith(".safetensors") for f in files) else ".bin"
    keep = []
    for name in files:
        if "/" in name:  # checkpoints in subfolders are not what from_pretrained(root) loads
            continue
        if name.endswith((weights, f"{weights}.index.json")) and not name.startswith(("optimizer", "training_args")):
            keep.append(name)
        elif (
            (name.endswith(".json") and not name.endswith(".index.json"))
            or name.startswith("tokenizer")
            or name.endswith((".model", ".tiktoken", ".txt"))
        ):
            keep.append(name)
    return sorted(keep)


def split_reference(reference: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`); no `@` -> (reference, None) (`ModelRef.split`)."""
    from registry.catalog.entries import ModelRef

    return ModelRef.split(reference)


def resolve_model(reference: str, *, hub: HubClient | None = None, progress: bool = False) -> ResolvedModel:
    """Find the model named by `reference` and pin its identity.

    Args:
        reference: a local checkpoint directory, or `owner/name[@revision]` on the Hub.
        hub: the Hub client for repo references (default: `HubClient()` from `HF_ENDPOINT`).
        progress: show progress bars.

    Returns:
        The local directory to load and the identity for records and the cache.

    Raises:
        DataNotFoundError: a local path without weights.
        EvaluationError: neither an existing path nor a valid repo id.
        HubError: the Hub download failed.
    """
    path = Path(reference).expanduser()
    if path.is_dir():
        weights_hash = hash_model_files(path, progress=progress)
        return ResolvedModel(
            path=path.resolve(),
            identity=ModelIdentity(reference=reference, local_path=str(path.resolve()), weights_hash=weights_hash),
        )
    repo_id, revision = split_reference(reference)
    if not _REPO_ID.match(repo_id):
        raise EvaluationError(
            f"Model {reference!r} is neither an existing directory nor a Hub repo id (owner/name[@revision])."
        )
    owner = repo_id.partition("/")[0]
    if Path(owner).is_dir():  # `ckpts/ct-bn` with a typo reads as a repo id: say which it was taken for
        log.warning("No directory %s here (though %s/ exists); looking for the Hub repo %s.", repo_id, owner, repo_id)
    hub = hub or _default_client()
    files = model_files_to_fetch(hub.list_files(repo_id, revision=revision))
    snapshot = hub.snapshot(repo_id, repo_type="model", revision=revision, allow_patterns=files)
    sha = _snapshot_sha(hub, snapshot, repo_id=repo_id, repo_type="model", revision=revision)
    return ResolvedModel(
        path=snapshot,
        identity=ModelIdentity(
            reference=reference, repo_id=repo_id, revision=revision, sha=sha, local_path=str(snapshot)
        ),
    )


def fetch_data_repo(repo: str, *, files: Iterable[str], hub: HubClient | None = None) -> tuple[Path, str]:
    """Download the evaluation files a suite needs from a Hub dataset repo.

    Args:
        repo: `owner/name[@revision]` of a dataset repo in the `../shared/data` layout.
        files: paths inside the repo the tasks read.
        hub: the Hub client (default: `HubClient()` from `HF_ENDPOINT`).

    Returns:
        (the local snapshot directory, `hub:<repo>@<sha>` for the record).

    Raises:
        HubError: the repo or revision cannot be fetched.
    """
    repo_id, revision = split_reference(repo)
    hub = hub or _default_client()
    snapshot = hub.snapshot(repo_id, repo_type="dataset", revision=revision, allow_patterns=sorted(set(files)))
    sha = _snapshot_sha(hub, snapshot, repo_id=repo_id, repo_type="dataset", revision=revision)
    return snapshot, f"hub:{repo_id}@{sha}"


def _default_client() -> HubClient:
    from registry.hub import HubClient

    return HubClient()


def _snapshot_sha(hub: HubClient, snapshot: Path, *, repo_id: str, repo_type: str, revision: str | None) -> str:
    """The commit a snapshot holds: its cache folder is named after it; else ask the Hub."""
    if _SHA.match(snapshot.name):
        return snapshot.name
    sha = hub.head_sha(repo_id, repo_type=repo_type, revision=revision)
    if sha is None:
        raise EvaluationError(f"Cannot resolve the commit of {repo_type} repo {repo_id}@{revision or 'main'}.")
    return sha
