"""Evaluation data as a Hub dataset repo: the `../shared/data` layout, uploaded as-is.

Files keep their paths (evaluation downloads them by path). The README gains a `configs:` block so
`datasets.load_dataset(repo, "<config>")` also works: one config per folder of split files
(`train/dev/test.jsonl`, e.g. `sib200-ben_Beng`) and one per other JSONL file (e.g.
`flores200-devtest-ben_Beng`). Only `.jsonl` files become configs: `datasets` infers one builder
per repo, so mixing formats would break every config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import DataNotFoundError
from registry.progress import progress_bar

if TYPE_CHECKING:
    from registry.hub import HubClient

logger = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "dev": "validation", "validation": "validation", "valid": "validation", "test": "test"}


def data_files(directory: Path) -> list[str]:
    """Relative paths of the files to upload (hidden files and folders skipped), sorted."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return out


def dataset_configs(paths: list[str]) -> list[dict[str, Any]]:
    """`configs:` entries for the JSONL files among `paths` (see the module docstring)."""
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        if p.endswith(".jsonl"):
            folder, _, _ = p.rpartition("/")
            by_dir.setdefault(folder, []).append(p)
    configs: list[dict[str, Any]] = []
    for folder, files in sorted(by_dir.items()):
        stems = [f.rsplit("/", 1)[-1][: -len(".jsonl")] for f in files]
        prefix = folder.replace("/", "-")
        if all(s in SPLIT_NAMES for s in stems) and len({SPLIT_NAMES[s] for s in stems}) == len(stems):
            configs.append(
                {
                    "config_name": prefix or "default",
                    "data_files": [{"split": SPLIT_NAMES[s], "path": f} for s, f in zip(stems, files, strict=True)],
                }
            )
        else:
            for stem, f in zip(stems, files, strict=True):
                name = f"{prefix}-{stem}" if prefix else stem
                configs.append({"config_name": name, "data_files": [{"split": "train", "path": f}]})
    return configs


def dataset_card(paths: list[str], *, readme: str | None) -> str:
    """README text: the folder's own README (or a stub) with `configs` and our tag in its metadata.

    huggingface_hub's `DatasetCard` parses a front matter the README already has (a license,
    say), so the result keeps it and has exactly one.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    text = readme if readme is not None else "# Evaluation data\n\nUploaded by `registry hub seed-data`.\n"
    meta: dict[str, Any] = {}
    if text.startswith("---"):
        parsed = DatasetCard(text)
        meta, text = parsed.data.to_dict(), parsed.text  # type: ignore[no-untyped-call]
    tags = [str(tag) for tag in meta.get("tags") or []]
    meta.update(
        configs=dataset_configs(paths),
        tags=[*tags, *(["mergeling-eval-data"] if "mergeling-eval-data" not in tags else [])],
    )
    return str(DatasetCard(f"---\n{DatasetCardData(**meta).to_yaml()}\n---\n{text}"))


def seed_data_repo(
    hub: HubClient, directory: Path, *, repo_id: str, private: bool = False, progress: bool = True
) -> str:
    """Create (or update) dataset repo `repo_id` with the files of `directory`, in one commit.

    Args:
        hub: the Hub client (its token must write to the repo's namespace).
        directory: a folder in the `../shared/data` layout.
        repo_id: `owner/name` of the dataset repo.
        private: create the repo private.
        progress: show a progress bar while collecting files.

    Returns:
        The commit sha.

    Raises:
        DataNotFoundError: the folder holds no JSONL files.
        HubError: the repo cannot be created or written.
    """
    paths = data_files(directory)
    if not any(p.endswith(".jsonl") for p in paths):
        raise DataNotFoundError(
            f"No .jsonl files under {directory}; pass a folder laid out like ../shared/data", path=str(directory)
        )
    readme_path = directory / "README.md"
    readme = readme_path.read_text(encoding="utf-8") if readme_path.is_file() else None
    add: dict[str, bytes | Path] = {}
    for rel in progress_bar(paths, desc="collect files", unit="file", enabled=progress):
        if rel != "README.md":
            add[rel] = directory / rel
    add["README.md"] = dataset_card(paths, readme=readme).encode()
    hub.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    logger.info("Uploading %d files from %s to dataset %s", len(add), directory, repo_id)
    return hub.commit_files(
        repo_id, repo_type="dataset", message=f"Seed evaluation data from {directory.name}", add=add
    )
