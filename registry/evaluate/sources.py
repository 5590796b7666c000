"""Where the model and the data come from, and their identities.

A model is a local directory (identified by a hash of its weight, config and tokenizer files) or a
Hub repo `owner/name[@revision]` (identified by the resolved commit sha). Data is a local
directory in the `../shared/data` layout, or a Hub dataset repo with the same layout.

Hub access goes through `huggingface_hub` with the endpoint from `HF_ENDPOINT`.
TODO(hub): route through `registry.hub` once it lands (it is the one Hub wrapper).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from registry.errors import DataNotFoundError, EvaluationError, HubError
from registry.evaluate.records import ModelIdentity
from registry.progress import progress_bar

log = logging.getLogger(__name__)

# Files whose bytes decide what a model computes (weights, shapes, tokenization).
_IDENTITY_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "config.json",
                      "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")
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
    with progress_bar(total=sum(p.stat().st_size for p in files), desc="hash weights", unit="B",
                      unit_scale=True, enabled=progress) as bar:
        for path in files:
            digest.update(f"\0{path.name}\0".encode())
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    bar.update(len(chunk))
    return digest.hexdigest()


def split_reference(reference: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`); no `@` -> (reference, None)."""
    name, sep, revision = reference.partition("@")
    return name, (revision or None) if sep else None


def resolve_model(reference: str, *, progress: bool = False) -> ResolvedModel:
    """Find the model named by `reference` and pin its identity.

    Args:
        reference: a local checkpoint directory, or `owner/name[@revision]` on the Hub.
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
    snapshot = _snapshot(repo_id, repo_type="model", revision=revision, allow_patterns=None)
    sha = snapshot.name  # snapshot folders are named after the resolved commit sha
    return ResolvedModel(
        path=snapshot,
        identity=ModelIdentity(reference=reference, repo_id=repo_id, revision=revision, sha=sha, local_path=str(snapshot)),
    )


def fetch_data_repo(repo: str, *, files: Iterable[str]) -> tuple[Path, str]:
    """Download the evaluation files a suite needs from a Hub dataset repo.

    Args:
        repo: `owner/name[@revision]` of a dataset repo in the `../shared/data` layout.
        files: paths inside the repo the tasks read.

    Returns:
        (the local snapshot directory, `hub:<repo>@<sha>` for the record).

    Raises:
        HubError: the repo or revision cannot be fetched.
    """
    repo_id, revision = split_reference(repo)
    snapshot = _snapshot(repo_id, repo_type="dataset", revision=revision, allow_patterns=sorted(set(files)))
    return snapshot, f"hub:{repo_id}@{snapshot.name}"


def _snapshot(repo_id: str, *, repo_type: str, revision: str | None, allow_patterns: list[str] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, allow_patterns=allow_patterns))
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_type} repo {repo_id} has no revision {revision!r}; check the @revision.",
                       repo_id=repo_id) from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"{repo_type} repo {repo_id} was not found on the Hub (HF_ENDPOINT); check the name "
                       "and your token (HF_TOKEN).", repo_id=repo_id) from exc
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise HubError(f"Downloading {repo_type} repo {repo_id} failed: {exc}", repo_id=repo_id) from exc
