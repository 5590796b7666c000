"""`registry add --from FILE`: record a list of checkpoints (e.g. recipes/registry-seed.yaml).

A seed file is metadata only (no weights): a default base model and a list of CT/SFT checkpoints.
Each entry is verified on the Hub like `registry add` does; when the Hub cannot hold them (the real
checkpoints on an offline lab hub), `--no-verify` records them as *unverified*: the requested
revision instead of a commit sha, no shapes, `verified: false`, `source: seed`. `registry pairs`
reports such pairs as `unverified`, never as compatible, until they are added again verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.catalog.entries import (
    CtEntry,
    ModelRef,
    SftEntry,
    ct_entry_id,
    sft_entry_id,
    split_reference,
    validate_language,
)
from registry.catalog.verify import ModelHub, build_ct_entry, build_sft_entry
from registry.errors import CatalogError, RecipeError
from registry.progress import progress_bar


class SeedCheckpoint(BaseModel):
    """One checkpoint of a seed file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ct", "sft"]
    repo: str = Field(description="owner/name[@revision]")
    language: str | None = None
    base: str | None = Field(default=None, description="overrides the file's base (owner/name[@revision])")
    tokens: int | None = Field(default=None, ge=0)
    data: str | None = None
    note: str | None = None

    @field_validator("repo", "base")
    @classmethod
    def _check_reference(cls, value: str | None) -> str | None:
        if value is not None:
            split_reference(value)
        return value

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        return validate_language(value) if value is not None else None

    @model_validator(mode="after")
    def _check_kind_fields(self) -> SeedCheckpoint:
        if self.kind == "ct" and self.language is None:
            raise ValueError(f"CT checkpoint {self.repo} needs a language (e.g. ben_Beng)")
        if self.kind == "ct" and self.data is not None:
            raise ValueError(f"CT checkpoint {self.repo}: 'data' is for SFT checkpoints; use 'tokens' or 'note'")
        if self.kind == "sft" and (self.language is not None or self.tokens is not None):
            raise ValueError(f"SFT checkpoint {self.repo}: 'language' and 'tokens' are for CT checkpoints")
        return self


class SeedFile(BaseModel):
    """A seed file: a default base and the checkpoints to record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(description="owner/name[@revision] of the base every checkpoint derives from")
    checkpoints: tuple[SeedCheckpoint, ...] = Field(min_length=1)

    @field_validator("base")
    @classmethod
    def _check_base(cls, value: str) -> str:
        split_reference(value)
        return value


def load_seed(path: Path) -> SeedFile:
    """Read and validate a seed file.

    Raises:
        RecipeError: when the file is missing, not YAML, or not a valid seed (the field is named).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecipeError(f"seed file {path} not found", path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"seed file {path} is not valid YAML: {exc}", path=str(path)) from exc
    try:
        return SeedFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise RecipeError(f"seed file {path}: {where}: {message}", path=str(path), field=where) from exc


def seed_entries(
    hub: ModelHub | None, seed: SeedFile, *, verify: bool = True, progress: bool = False
) -> list[CtEntry | SftEntry]:
    """Build the entries of a seed file, verified on the Hub or recorded as unverified.

    Args:
        hub: the Hub client (unused, may be None, when `verify` is False).
        seed: the parsed seed file.
        verify: check each checkpoint and its base on the Hub (the default).
        progress: show a progress bar on stderr while verifying.

    Returns:
        One entry per checkpoint, in file order.

    Raises:
        CatalogError: when `verify` is True and any checkpoint cannot be verified; the message
            lists every failure and names `--no-verify`.
    """
    entries: list[CtEntry | SftEntry] = []
    failures: list[str] = []
    items = progress_bar(seed.checkpoints, desc="Verifying", unit="model", enabled=progress and verify)
    for item in items:
        try:
            entries.append(_verified(hub, item, seed) if verify else _unverified(item, seed))
        except CatalogError as exc:
            # The short reason keeps a file's worth of failures readable; base mismatches and
            # other one-off failures keep their full message.
            failures.append(f"{exc.repo_id}: {exc.reason}" if exc.reason and exc.repo_id else str(exc))
    if failures:
        raise CatalogError(
            f"{len(failures)} of {len(seed.checkpoints)} seed checkpoints could not be verified, nothing added: "
            + "; ".join(failures)
            + ". Check --endpoint, or pass --no-verify to record them as unverified metadata"
        )
    return entries


def _verified(hub: ModelHub | None, item: SeedCheckpoint, seed: SeedFile) -> CtEntry | SftEntry:
    if hub is None:
        raise CatalogError("verifying seed checkpoints needs a Hub client")
    repo, revision = split_reference(item.repo)
    base, base_revision = split_reference(item.base or seed.base)
    if item.kind == "ct":
        assert item.language is not None
        return build_ct_entry(
            hub, repo=repo, revision=revision, language=item.language, base=base, base_revision=base_revision,
            tokens=item.tokens, source="seed", note=item.note,
        )  # fmt: skip
    return build_sft_entry(
        hub,
        repo=repo,
        revision=revision,
        base=base,
        base_revision=base_revision,
        data=item.data,
        source="seed",
        note=item.note,
    )


def _unverified(item: SeedCheckpoint, seed: SeedFile) -> CtEntry | SftEntry:
    repo, revision = split_reference(item.repo)
    base, base_revision = split_reference(item.base or seed.base)
    revision = revision or "main"
    ref = ModelRef(repo=base, revision=base_revision)
    if item.kind == "ct":
        assert item.language is not None
        return CtEntry(
            id=ct_entry_id(repo=repo, revision=revision, language=item.language), language=item.language,
            tokens=item.tokens, repo=repo, revision=revision, base=ref, verified=False, source="seed", note=item.note,
        )  # fmt: skip
    return SftEntry(
        id=sft_entry_id(repo=repo, revision=revision), data=item.data, repo=repo, revision=revision, base=ref,
        verified=False, source="seed", note=item.note,
    )  # fmt: skip
