"""Catalog entries: what the registry records about CT checkpoints, SFT checkpoints and merges.

Every entry is a frozen pydantic model stored as one JSON file on the Hub
(`entries/<kind>/<id>.json`). IDs are stable and readable, derived from the entry's content:
`ct-ben_Beng-pkupie--Llama-2-7b-ben-1a2b3c4`, `sft-pkupie--Llama-2-7b-FLAN-step884-1a2b3c4`,
`merge-my-org--Llama-2-7b-ben-ties-sv-<recipe hash 7>`. A verified entry's revision is a 40-hex
commit sha; an unverified one (seed metadata recorded without a reachable Hub) keeps the requested
revision and says so in `verified`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from registry.languages import ISO_639_1, code_from_card

_LANGUAGE_RE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")

EntryKind = Literal["ct", "sft", "ct_sft", "merge"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("ct", "sft", "ct_sft", "merge")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def validate_language(code: str) -> str:
    """Check a FLORES-200 style language code (`ben_Beng`).

    Args:
        code: the code to check.

    Returns:
        The code unchanged.

    Raises:
        ValueError: when the code is not `xxx_Xxxx` (ISO 639-3 + ISO 15924 script).
    """
    if not _LANGUAGE_RE.match(code):
        known = ", ".join(sorted(ISO_639_1))
        raise ValueError(
            f"language {code!r} is not a FLORES-200 style code (ISO 639-3 '_' ISO 15924 script, "
            f"e.g. ben_Beng); known: {known}"
        )
    return code


def language_from_card(value: str) -> str | None:
    """Map a model-card `language` value (`bn`, `ben` or `ben_Beng`) to a `ben_Beng` code, or None."""
    if _LANGUAGE_RE.match(value):
        return value
    return code_from_card(value)


def validate_repo_id(repo_id: str) -> str:
    """Check a Hub repo id (`owner/name`); raises ValueError naming the value otherwise."""
    if not _REPO_RE.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"repo id {repo_id!r} is not of the form owner/name (letters, digits, '.', '_', '-')")
    return repo_id


def split_reference(reference: str) -> tuple[str, str | None]:
    """Split `owner/name[@revision]` into the repo id and the revision (None when absent).

    Raises:
        ValueError: when the repo id is malformed or the revision is empty.
    """
    ref = ModelRef.parse(reference)
    return ref.repo, ref.revision


def is_commit_sha(revision: str) -> bool:
    """Whether a revision is a full 40-hex commit id."""
    return bool(_SHA_RE.match(revision))


def _revision_tag(revision: str) -> str:
    # A commit sha shortens to 7 hex digits (git's default); a branch or tag name stays readable.
    return revision[:7] if is_commit_sha(revision) else _ID_UNSAFE_RE.sub("-", revision).strip("-")


def _repo_tag(repo_id: str) -> str:
    return repo_id.replace("/", "--")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A Hub model at a revision (a commit sha once verified)."""

    repo: str
    revision: str | None = None

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        return validate_repo_id(value)

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}" if self.revision else self.repo

    @staticmethod
    def split(reference: str) -> tuple[str, str | None]:
        """The one lexical split of `name[@revision]`: (name, revision or None); nothing is validated.

        For callers that accept more than a Hub repo id (a local path, `model+lora`) and check the
        name themselves; an empty revision (`name@`) reads as None.
        """
        name, sep, revision = reference.partition("@")
        return name, (revision or None) if sep else None

    @classmethod
    def parse(cls, reference: str) -> ModelRef:
        """`owner/name[@revision]` -> a `ModelRef`.

        Raises:
            ValueError: a malformed repo id, an empty revision after `@`, or more than one `@`.
        """
        repo, revision = cls.split(reference)
        if "@" in reference and not revision:
            raise ValueError(f"reference {reference!r} has an empty revision after '@'; drop the '@' or name one")
        if revision is not None and "@" in revision:
            raise ValueError(f"reference {reference!r} has more than one '@'; write owner/name@revision")
        validate_repo_id(repo)
        return cls(repo=repo, revision=revision)


class ModelShape(_Frozen):
    """Architecture and shape facts read from a checkpoint's config.json."""

    architecture: str
    model_type: str
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False

    def body(self) -> dict[str, object]:
        """Every fact except the vocabulary size: what must match for two checkpoints to merge."""
        return self.model_dump(exclude={"vocab_size"})


class TokenizerFacts(_Frozen):
    """The CT checkpoint's vocabulary against its base's (from both config.json files)."""

    vocab_size: int = Field(gt=0)
    base_vocab_size: int = Field(gt=0)
    extended: bool = Field(description="continued pre-training added tokens to the base vocabulary")

    @classmethod
    def from_sizes(cls, *, vocab_size: int, base_vocab_size: int) -> TokenizerFacts:
        """Build the facts from the two vocabulary sizes."""
        return cls(vocab_size=vocab_size, base_vocab_size=base_vocab_size, extended=vocab_size > base_vocab_size)

    @model_validator(mode="after")
    def _check_extended(self) -> TokenizerFacts:
        if self.extended != (self.vocab_size > self.base_vocab_size):
            raise ValueError(
                f"tokenizer facts say extended={self.extended} but vocab sizes are "
                f"{self.vocab_size} (CT) and {self.base_vocab_size} (base)"
            )
        return self

    @property
    def added_tokens(self) -> int:
        """Tokens added over the base vocabulary (negative when the CT vocabulary is smaller)."""
        return self.vocab_size - self.base_vocab_size


class AdapterFacts(_Frozen):
    """A CT recorded as a PEFT LoRA adapter (from its adapter_config.json): the merge applies it to its base.

    The entry's `base` is the adapter's `base_model_name_or_path` and its shape facts are the base's.
    """

    peft_type: Literal["LORA"] = "LORA"
    base_model_name_or_path: str
    r: int = Field(gt=0)
    lora_alpha: float
    use_rslora: bool = False
    target_modules: tuple[str, ...] = ()
    modules_to_save: tuple[str, ...] = ()


class EvalResult(_Frozen):
    """One evaluation number of a model (a merge, or a CT / SFT / CT-then-SFT checkpoint the bot evaluated)."""

    task: str
    metric: str
    value: float
    language: str | None = None
    n: int | None = Field(default=None, ge=0, description="examples evaluated")


class _CheckpointEntry(_Frozen):
    id: str
    repo: str
    revision: str = Field(description="40-hex commit sha when verified, else the requested revision")
    base: ModelRef
    shape: ModelShape | None = None
    verified: bool = True
    source: Literal["add", "seed", "sync"] = "add"
    added_at: datetime = Field(default_factory=_now)
    note: str | None = None
    results: tuple[EvalResult, ...] = Field(
        default=(), description="evaluation numbers of this revision (the bot records the CT's and SFT's it computes)"
    )

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        return validate_repo_id(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> _CheckpointEntry:
        if self.verified and not is_commit_sha(self.revision):
            raise ValueError(f"verified entry {self.repo} has revision {self.revision!r}, not a 40-hex commit sha")
        if self.verified and self.shape is None:
            raise ValueError(f"verified entry {self.repo} has no shape facts from config.json")
        expected = self.expected_id()
        if self.id != expected:
            raise ValueError(f"entry id {self.id!r} does not match its content; expected {expected!r}")
        return self

    def expected_id(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def ref(self) -> ModelRef:
        return ModelRef(repo=self.repo, revision=self.revision)


class CtEntry(_CheckpointEntry):
    """A continually pre-trained (CT) checkpoint for one language."""

    kind: Literal["ct"] = "ct"
    language: str
    tokens: int | None = Field(default=None, ge=0, description="CT training tokens")
    tokenizer: TokenizerFacts | None = None
    adapter: AdapterFacts | None = Field(default=None, description="set when the CT is a LoRA adapter of `base`")

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        return validate_language(value)

    @model_validator(mode="after")
    def _check_adapter_base(self) -> CtEntry:
        if self.adapter is not None and self.adapter.base_model_name_or_path != self.base.repo:
            raise ValueError(
                f"adapter entry {self.repo} is a LoRA adapter of {self.adapter.base_model_name_or_path}, "
                f"but its base is {self.base.repo}"
            )
        return self

    def expected_id(self) -> str:
        return ct_entry_id(repo=self.repo, revision=self.revision, language=self.language)


class SftEntry(_CheckpointEntry):
    """An English instruction-tuned (SFT) checkpoint."""

    kind: Literal["sft"] = "sft"
    data: str | None = Field(default=None, description="training data, e.g. flan")

    def expected_id(self) -> str:
        return sft_entry_id(repo=self.repo, revision=self.revision)


class CtSftEntry(_CheckpointEntry):
    """A CT-then-SFT checkpoint: a CT model further fine-tuned on the English SFT data.

    The paper's baseline (Tao et al. 2024, §4): the traditional pipeline that merging is compared
    with. `base` is the pre-trained base both the CT and the SFT models derive from (so it sits
    beside them in pairing); `ct` is the CT checkpoint the SFT stage started from.
    """

    kind: Literal["ct_sft"] = "ct_sft"
    language: str
    ct: ModelRef = Field(description="the CT checkpoint the SFT stage was run on")
    data: str | None = Field(default=None, description="SFT training data, e.g. flan")
    ct_tokens: int | None = Field(default=None, ge=0, description="CT training tokens of `ct`")

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        return validate_language(value)

    def expected_id(self) -> str:
        return ct_sft_entry_id(repo=self.repo, revision=self.revision, language=self.language)


class MergeInput(_Frozen):
    """One input of a merge: role, model and the exact commit merged."""

    role: Literal["ct", "sft", "base"]
    repo: str
    revision: str
    entry_id: str | None = None

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        return validate_repo_id(value)


MergeStatus = Literal["pending", "running", "merged", "evaluated", "published", "failed"]


class MergeEntry(_Frozen):
    """A merge the bot ran (or is running): inputs, recipe, output and evaluation results."""

    kind: Literal["merge"] = "merge"
    id: str
    method: str
    recipe_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the canonical recipe")
    inputs: tuple[MergeInput, ...] = Field(min_length=2)
    output_repo: str
    output_revision: str | None = None
    status: MergeStatus = "pending"
    languages: tuple[str, ...] = ()
    results: tuple[EvalResult, ...] = ()
    error: str | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @field_validator("output_repo")
    @classmethod
    def _check_output(cls, value: str) -> str:
        return validate_repo_id(value)

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_language(code) for code in value)

    @model_validator(mode="after")
    def _check_consistency(self) -> MergeEntry:
        if self.output_revision is not None and not is_commit_sha(self.output_revision):
            raise ValueError(f"merge output revision {self.output_revision!r} is not a 40-hex commit sha")
        if self.status in ("merged", "evaluated", "published") and self.output_revision is None:
            raise ValueError(f"merge status {self.status!r} needs the output commit sha (output_revision)")
        expected = merge_entry_id(output_repo=self.output_repo, recipe_hash=self.recipe_hash)
        if self.id != expected:
            raise ValueError(f"entry id {self.id!r} does not match its content; expected {expected!r}")
        return self


Entry = Annotated[CtEntry | SftEntry | CtSftEntry | MergeEntry, Field(discriminator="kind")]
_ENTRY_ADAPTER: TypeAdapter[CtEntry | SftEntry | CtSftEntry | MergeEntry] = TypeAdapter(Entry)


def ct_entry_id(*, repo: str, revision: str, language: str) -> str:
    """The stable ID of a CT entry: `ct-<language>-<owner>--<name>-<sha7 or revision>`."""
    return f"ct-{language}-{_repo_tag(repo)}-{_revision_tag(revision)}"


def sft_entry_id(*, repo: str, revision: str) -> str:
    """The stable ID of an SFT entry: `sft-<owner>--<name>-<sha7 or revision>`."""
    return f"sft-{_repo_tag(repo)}-{_revision_tag(revision)}"


def ct_sft_entry_id(*, repo: str, revision: str, language: str) -> str:
    """The stable ID of a CT-then-SFT entry: `ct_sft-<language>-<owner>--<name>-<sha7 or revision>`."""
    return f"ct_sft-{language}-{_repo_tag(repo)}-{_revision_tag(revision)}"


def merge_entry_id(*, output_repo: str, recipe_hash: str) -> str:
    """The stable ID of a merge entry: `merge-<owner>--<name>-<recipe hash 7>` (known before the output)."""
    return f"merge-{_repo_tag(output_repo)}-{recipe_hash[:7]}"


def entry_kind(entry_id: str) -> EntryKind:
    """The kind an entry ID names (its prefix).

    Raises:
        ValueError: when the ID does not start with `ct-`, `sft-`, `ct_sft-` or `merge-`.
    """
    prefix = entry_id.split("-", 1)[0]
    if prefix not in ENTRY_KINDS or "/" in entry_id or entry_id.startswith(".") or ".." in entry_id:
        raise ValueError(
            f"entry id {entry_id!r} does not start with one of ct-, sft-, ct_sft-, merge- (see `registry list`)"
        )
    return prefix


def entry_path(entry_id: str) -> str:
    """Where an entry lives in the registry repo: `entries/<kind>/<id>.json`."""
    return f"entries/{entry_kind(entry_id)}/{entry_id}.json"


def parse_entry(text: str | bytes) -> CtEntry | SftEntry | CtSftEntry | MergeEntry:
    """Parse one stored entry (JSON).

    Raises:
        pydantic.ValidationError: when the JSON is not a valid entry.
    """
    return _ENTRY_ADAPTER.validate_json(text)


def dump_entry(entry: CtEntry | SftEntry | CtSftEntry | MergeEntry) -> bytes:
    """Serialise an entry as stored: indented JSON, keys in field order, trailing newline."""
    return (entry.model_dump_json(indent=2, exclude_none=False) + "\n").encode()
