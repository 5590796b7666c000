"""Resolving model references: local directories, Hub repo ids, and which Hub files a merge fetches."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import CompatibilityError
from registry.merge.sources import hub_files, resolve_source


def test_hub_files_take_one_weights_format() -> None:
    both = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
        "LICENSE.txt",
        "original/consolidated.00.pth",
        "training_args.bin",
    ]
    assert hub_files(both) == sorted(
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "special_tokens_map.json",
            "tokenizer.model",
            "tokenizer_config.json",
        ]
    )
    # Without safetensors the pickled weights are fetched (and later loaded weights_only); other .bin files never.
    assert hub_files(["pytorch_model.bin", "training_args.bin", "config.json"]) == ["config.json", "pytorch_model.bin"]


def test_local_directory_and_bad_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    source = resolve_source("m")
    assert source.path == tmp_path / "m" and source.repo_id is None and source.commit is None
    for ref in ("./missing", "not-a-repo-id", "a/b/c"):
        with pytest.raises(CompatibilityError, match="no such directory.*not a Hub repo id"):
            resolve_source(ref)
    with pytest.raises(CompatibilityError, match="`registry demo` builds the demo models"):
        resolve_source(".mergeling/demo/lab/ct-ben_Beng")


def test_offline_hub_reference_without_cache_is_unresolved(tmp_path: Path) -> None:
    from registry.hub import HubClient

    hub = HubClient(endpoint="http://127.0.0.1:9", cache_dir=tmp_path / "cache")
    source = resolve_source("org/model@v1", offline=True, hub=hub)
    assert (source.path, source.repo_id, source.revision) == (None, "org/model", "v1")
