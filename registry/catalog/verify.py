"""Verify a checkpoint on the Hub before it enters the catalog, and build its entry.

`add` resolves the revision to a commit sha, reads config.json at that commit for the
architecture and shapes, checks the declared base against the model card and the base's own
config, and refuses (with the reason) anything it cannot verify: a missing repo, a missing
revision, no config.json, a config without Llama-style shape keys, or a base that does not match.

A CT may be a PEFT LoRA adapter (adapter_config.json, no config.json): its base is the adapter's
`base_model_name_or_path` (checked against the one given), its shapes are the base's
(`registry.catalog.adapters`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from registry.catalog.adapters import adapter_base, adapter_facts
from registry.catalog.entries import (
    AdapterFacts,
    CtEntry,
    CtSftEntry,
    ModelRef,
    ModelShape,
    SftEntry,
    TokenizerFacts,
    ct_entry_id,
    ct_sft_entry_id,
    language_from_card,
    sft_entry_id,
)
from registry.errors import CatalogError, HubRepoNotFoundError, HubRevisionNotFoundError
from registry.io.lora import ADAPTER_CONFIG
from registry.languages import check_language

_Entry = TypeVar("_Entry", CtEntry, SftEntry, CtSftEntry)

# The role tags model cards carry (`registry lab`, `registry sync`): a checkpoint tagged for one
# role is refused as the other, or `pairs` would pair a CT with itself.
ROLE_TAGS = {"ct": "mergeling-ct", "sft": "mergeling-sft"}
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size")


class ModelHub(Protocol):
    """The Hub operations verification needs (model repos)."""

    def model_info(self, repo_id: str, *, revision: str | None = None) -> Any: ...

    def read_file(self, repo_id: str, path: str, *, repo_type: str, revision: str) -> bytes: ...


@dataclass(frozen=True)
class Checkpoint:
    """What the Hub says about one model at one commit."""

    repo: str
    revision: str
    shape: ModelShape | None  # None for a LoRA adapter: its base's shapes apply
    card: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    adapter: AdapterFacts | None = None
    adapter_base_revision: str | None = None  # the `revision` an adapter's config names for its base

    @property
    def card_bases(self) -> tuple[str, ...]:
        """The `base_model` the model card declares (none, one or several)."""
        return _as_tuple(self.card.get("base_model"))

    @property
    def card_languages(self) -> tuple[str, ...]:
        """The card's `language` values as FLORES-200 codes (values it cannot map are left out)."""
        codes = (language_from_card(value) for value in _as_tuple(self.card.get("language")))
        return tuple(dict.fromkeys(code for code in codes if code))


def shape_from_config(config: dict[str, Any], *, repo: str) -> ModelShape:
    """Read architecture and shape facts from a config.json mapping.

    Args:
        config: the parsed config.json.
        repo: the repo it came from (for the error message).

    Returns:
        The shape facts.

    Raises:
        CatalogError: when Llama-style shape keys are missing or not positive integers.
    """
    missing = [key for key in _SHAPE_KEYS if not isinstance(config.get(key), int) or config[key] <= 0]
    architectures = config.get("architectures") or []
    if missing or not architectures or not config.get("model_type"):
        missing += [k for k in ("architectures", "model_type") if not config.get(k)]
        raise CatalogError(
            f"config.json of {repo} lacks {', '.join(missing)}; Mergeling records decoder models with "
            "Llama-style configs (hidden_size, num_hidden_layers, intermediate_size, num_attention_heads, "
            "vocab_size, architectures, model_type)",
            repo_id=repo,
            reason=f"config.json lacks {', '.join(missing)}",
        )
    return ModelShape(
        architecture=str(architectures[0]),
        model_type=str(config["model_type"]),
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        intermediate_size=config["intermediate_size"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        vocab_size=config["vocab_size"],
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def inspect_checkpoint(hub: ModelHub, repo: str, *, revision: str | None = None) -> Checkpoint:
    """Resolve a model's revision to a commit and read its config.json (or adapter_config.json) and card.

    Args:
        hub: the Hub client.
        repo: the model repo id.
        revision: a branch, tag or commit sha (default: the default branch).

    Returns:
        The checkpoint facts at the resolved commit.

    Raises:
        CatalogError: repo missing, revision missing, no or unreadable config.json, an adapter the
            engine cannot merge.
    """
    shown = f"{repo}@{revision}" if revision else repo
    try:
        info = hub.model_info(repo, revision=revision)
    except HubRevisionNotFoundError as exc:
        raise CatalogError(
            f"cannot verify {shown}: revision {revision!r} does not exist in {repo} "
            "(name a branch, tag or full commit sha that exists)",
            repo_id=repo,
            reason=f"revision {revision!r} not found",
        ) from exc
    except HubRepoNotFoundError as exc:
        raise CatalogError(
            f"cannot verify {shown}: model repo {repo} not found on this Hub (check the name and --endpoint; "
            "private repos need a --token that can read them)",
            repo_id=repo,
            reason="repo not found",
        ) from exc
    sha = getattr(info, "sha", None)
    if not sha:
        raise CatalogError(
            f"cannot verify {shown}: the Hub reports no commit for it (empty repo?)", repo_id=repo, reason="no commit"
        )
    files = {sibling.rfilename for sibling in (getattr(info, "siblings", None) or [])}
    card_data = getattr(info, "card_data", None)
    card = card_data.to_dict() if card_data is not None else {}
    tags = tuple(getattr(info, "tags", None) or ())
    if ADAPTER_CONFIG in files:  # a PEFT adapter, as the merge engine sees it
        adapter_config = _read_object(hub, repo, ADAPTER_CONFIG, sha=sha, shown=shown)
        facts = adapter_facts(adapter_config, repo=repo, shown=shown, files=files)
        revision_named = adapter_config.get("revision")
        return Checkpoint(
            repo=repo, revision=sha, shape=None, card=card, tags=tags, adapter=facts,
            adapter_base_revision=str(revision_named) if revision_named else None,
        )  # fmt: skip
    if "config.json" not in files:
        raise CatalogError(
            f"cannot verify {shown}: no config.json at commit {sha[:7]}, so its architecture and shapes are "
            "unknown; push the model's config.json (save_pretrained writes it)",
            repo_id=repo,
            reason="no config.json",
        )
    config = _read_object(hub, repo, "config.json", sha=sha, shown=shown)
    return Checkpoint(repo=repo, revision=sha, shape=shape_from_config(config, repo=repo), card=card, tags=tags)


def _read_object(hub: ModelHub, repo: str, path: str, *, sha: str, shown: str) -> dict[str, Any]:
    raw = hub.read_file(repo, path, repo_type="model", revision=sha)
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(
            f"cannot verify {shown}: {path} at {sha[:7]} is not valid JSON ({exc})",
            repo_id=repo,
            reason=f"{path} is not JSON",
        ) from exc
    if not isinstance(config, dict):
        raise CatalogError(
            f"cannot verify {shown}: {path} at {sha[:7]} is a JSON {type(config).__name__}, not an object; "
            f"push the {path} that save_pretrained writes",
            repo_id=repo,
            reason=f"{path} is not a JSON object",
        )
    return config


def check_base(checkpoint: Checkpoint, base: Checkpoint, *, kind: str) -> None:
    """Refuse a checkpoint that cannot be a fine-tune of the declared base.

    Raises:
        CatalogError: when the model card names another base, or the architecture or a shape
            (anything but the vocabulary size) differs from the base's config.json.
    """
    declared = checkpoint.card_bases
    if declared and base.repo not in declared:
        raise CatalogError(
            f"base mismatch: the model card of {checkpoint.repo} declares base_model {', '.join(declared)}, "
            f"not {base.repo}; pass --base {declared[0]} or fix the card",
            repo_id=checkpoint.repo,
        )
    if base.adapter is not None or base.shape is None:
        raise CatalogError(
            f"base {base.repo} is itself a LoRA adapter; pass the model it adapts (its {ADAPTER_CONFIG} names "
            f"{base.adapter.base_model_name_or_path if base.adapter else '?'}) as the base",
            repo_id=checkpoint.repo,
        )
    if checkpoint.shape is None:  # an adapter: it has its base's shapes
        return
    mine, theirs = checkpoint.shape.body(), base.shape.body()
    differing = [f"{key} {mine[key]} vs {theirs[key]}" for key in mine if mine[key] != theirs[key]]
    if differing:
        raise CatalogError(
            f"base mismatch: {kind.upper()} {checkpoint.repo} cannot derive from {base.repo} "
            f"({'; '.join(differing)}); pass the --base it was trained from",
            repo_id=checkpoint.repo,
        )
    if kind == "ct" and checkpoint.shape.vocab_size < base.shape.vocab_size:
        raise CatalogError(
            f"base mismatch: CT {checkpoint.repo} has {checkpoint.shape.vocab_size} vocabulary rows, fewer "
            f"than base {base.repo}'s {base.shape.vocab_size}; continued pre-training keeps or extends it",
            repo_id=checkpoint.repo,
        )


def check_role(checkpoint: Checkpoint, *, kind: str) -> None:
    """Refuse a checkpoint whose card tags it for the other role (`mergeling-ct` added as SFT).

    Raises:
        CatalogError: the card carries the other role's tag.
    """
    for other, tag in ROLE_TAGS.items():
        if other != kind and tag in checkpoint.tags:
            raise CatalogError(
                f"{checkpoint.repo} is tagged {tag} (a {other.upper()} checkpoint), not {ROLE_TAGS[kind]}; "
                f"use `registry add {other}`, fix the card's tags, or pass --force",
                repo_id=checkpoint.repo,
                reason=f"tagged {tag}",
            )


def check_card_language(checkpoint: Checkpoint, language: str) -> None:
    """Refuse a CT language the model card contradicts.

    English on the card is ignored (a CT card often lists the base's language too), and so is a
    card without a language or with values that map to no FLORES-200 code.

    Raises:
        CatalogError: the card names other target languages and not `language`.
    """
    declared = [code for code in checkpoint.card_languages if code != "eng_Latn"]
    if declared and language not in declared:
        raise CatalogError(
            f"the model card of {checkpoint.repo} declares language {', '.join(declared)}, not {language}; "
            f"pass --language {declared[0]}, fix the card, or pass --force",
            repo_id=checkpoint.repo,
            reason=f"card language {', '.join(declared)}",
        )


def build_ct_entry(
    hub: ModelHub,
    *,
    repo: str,
    revision: str | None,
    language: str,
    base: str | None,
    base_revision: str | None = None,
    tokens: int | None = None,
    source: str = "add",
    note: str | None = None,
    force: bool = False,
) -> CtEntry:
    """Verify a CT checkpoint (a model, or a LoRA adapter) and its base on the Hub and build its entry.

    Args:
        base: the base repo; None takes a LoRA adapter's own (required for a full model).
        force: record it even when its card contradicts `language` or tags it as an SFT model.

    Raises:
        CatalogError: when the language code is not FLORES-200 (see `registry.languages`), the
            checkpoint or the base cannot be verified, they do not match (an adapter's
            `base_model_name_or_path` is not `base`, say), or (unless `force`) the card contradicts
            the language or the role.
    """
    try:
        check_language(language)
    except ValueError as exc:
        raise CatalogError(f"cannot record {repo}: {exc}", repo_id=repo) from exc
    checkpoint = inspect_checkpoint(hub, repo, revision=revision)
    if not force:
        check_role(checkpoint, kind="ct")
        check_card_language(checkpoint, language)
    if checkpoint.adapter is not None:
        base, base_revision = adapter_base(
            checkpoint.adapter, checkpoint.adapter_base_revision, repo=repo, base=base, base_revision=base_revision
        )
    elif base is None:
        raise CatalogError(
            f"cannot record {repo}: name the base model it continued from (--base OWNER/NAME); only a LoRA "
            "adapter's base is read from the repo",
            repo_id=repo,
        )
    base_checkpoint = inspect_checkpoint(hub, base, revision=base_revision)
    check_base(checkpoint, base_checkpoint, kind="ct")
    shape = checkpoint.shape or base_checkpoint.shape
    assert shape is not None and base_checkpoint.shape is not None  # check_base refuses an adapter as base
    return _valid(
        CtEntry,
        id=ct_entry_id(repo=repo, revision=checkpoint.revision, language=language),
        repo=repo,
        revision=checkpoint.revision,
        language=language,
        base=ModelRef(repo=base, revision=base_checkpoint.revision),
        shape=shape,
        tokens=tokens,
        tokenizer=TokenizerFacts.from_sizes(
            vocab_size=shape.vocab_size, base_vocab_size=base_checkpoint.shape.vocab_size
        ),
        adapter=checkpoint.adapter,
        source=source,
        note=note,
    )


def build_sft_entry(
    hub: ModelHub,
    *,
    repo: str,
    revision: str | None,
    base: str,
    base_revision: str | None = None,
    data: str | None = None,
    source: str = "add",
    note: str | None = None,
    force: bool = False,
) -> SftEntry:
    """Verify an SFT checkpoint and its base on the Hub and build its entry.

    Args:
        force: record it even when its card tags it as a CT model.

    Raises:
        CatalogError: when the checkpoint or the base cannot be verified, they do not match, or
            (unless `force`) the card tags it `mergeling-ct`.
    """
    checkpoint = inspect_checkpoint(hub, repo, revision=revision)
    if checkpoint.adapter is not None:
        raise CatalogError(
            f"cannot record {repo} as SFT: it is a LoRA adapter, and only CT checkpoints may be adapters; merge it "
            "into its base with peft's merge_and_unload() and push the merged model",
            repo_id=repo,
            reason="SFT adapter",
        )
    if not force:
        check_role(checkpoint, kind="sft")
    base_checkpoint = inspect_checkpoint(hub, base, revision=base_revision)
    check_base(checkpoint, base_checkpoint, kind="sft")
    return _valid(
        SftEntry,
        id=sft_entry_id(repo=repo, revision=checkpoint.revision),
        repo=repo,
        revision=checkpoint.revision,
        base=ModelRef(repo=base, revision=base_checkpoint.revision),
        shape=checkpoint.shape,
        data=data,
        source=source,
        note=note,
    )


def build_ct_sft_entry(
    hub: ModelHub,
    *,
    repo: str,
    revision: str | None,
    ct: CtEntry,
    data: str | None = None,
    source: str = "add",
    note: str | None = None,
) -> CtSftEntry:
    """Verify a CT-then-SFT checkpoint against the CT it was fine-tuned from and build its entry.

    The checkpoint must have the CT's architecture and every shape, vocabulary included (the SFT
    stage does not change the vocabulary); its language, base and CT tokens are the CT's.

    Raises:
        CatalogError: the checkpoint cannot be verified, is a LoRA adapter, or does not match the CT.
    """
    checkpoint = inspect_checkpoint(hub, repo, revision=revision)
    if checkpoint.adapter is not None:
        raise CatalogError(
            f"cannot record {repo} as CT-then-SFT: it is a LoRA adapter; merge it into its CT with peft's "
            "merge_and_unload() and push the merged model",
            repo_id=repo,
            reason="CT-then-SFT adapter",
        )
    ct_checkpoint = inspect_checkpoint(hub, ct.repo, revision=ct.revision if ct.verified else None)
    declared = checkpoint.card_bases
    if declared and ct.repo not in declared and ct.base.repo not in declared:
        raise CatalogError(
            f"base mismatch: the model card of {repo} declares base_model {', '.join(declared)}, neither the CT "
            f"{ct.repo} nor its base {ct.base.repo}; pass --ct {declared[0]} or fix the card",
            repo_id=repo,
        )
    # The CT is this model's starting point: same architecture and shapes (the card was checked above).
    check_base(replace(checkpoint, card={}), ct_checkpoint, kind="ct-then-sft")
    if checkpoint.shape is not None and ct_checkpoint.shape is not None:
        if checkpoint.shape.vocab_size != ct_checkpoint.shape.vocab_size:
            raise CatalogError(
                f"cannot record {repo} as CT-then-SFT of {ct.repo}: vocabulary {checkpoint.shape.vocab_size} vs "
                f"the CT's {ct_checkpoint.shape.vocab_size}; the SFT stage keeps the CT's vocabulary",
                repo_id=repo,
            )
    return _valid(
        CtSftEntry,
        id=ct_sft_entry_id(repo=repo, revision=checkpoint.revision, language=ct.language),
        repo=repo,
        revision=checkpoint.revision,
        language=ct.language,
        base=ct.base,
        ct=ModelRef(repo=ct.repo, revision=ct_checkpoint.revision),
        ct_tokens=ct.tokens,
        shape=checkpoint.shape,
        data=data,
        source=source,
        note=note,
    )


def _valid(model: type[_Entry], **fields: Any) -> _Entry:
    # Entry validators raise ValueError (a bad language code, say); the user sees a CatalogError.
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        details = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise CatalogError(f"cannot record {fields.get('repo')}: {details}", repo_id=fields.get("repo")) from exc


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)
