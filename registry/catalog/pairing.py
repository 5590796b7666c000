"""Which CT × SFT pairs can be merged, and why not when they cannot (pure functions).

Two checkpoints merge tensor by tensor, so they must share the base model, the architecture and
every shape. The vocabulary is the one allowed difference: a CT checkpoint whose vocabulary was
extended over the base still merges with an SFT checkpoint on the base vocabulary (the merge takes
the CT tokenizer, and the embedding rows beyond the base come from the CT model alone).

A pair also names its CT-then-SFT baselines: the `ct_sft` entries fine-tuned from that CT (the
paper's traditional pipeline, which a merge of the pair is compared with).

A CT recorded as a LoRA adapter pairs only with SFT checkpoints of the adapter's own base (its
`base_model_name_or_path`): the merge applies the adapter to that base.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from registry.catalog.entries import CtEntry, CtSftEntry, MergeEntry, SftEntry

PairStatus = Literal["compatible", "incompatible", "unverified"]


class PairCheck(BaseModel):
    """The verdict on one CT × SFT pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ct_id: str
    sft_id: str
    language: str
    status: PairStatus
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    ct_sft_ids: tuple[str, ...] = ()  # CT-then-SFT baselines of this CT (entries of kind ct_sft)

    @property
    def compatible(self) -> bool:
        return self.status == "compatible"


def check_pair(ct: CtEntry, sft: SftEntry) -> PairCheck:
    """Decide whether a CT and an SFT checkpoint can be merged.

    Args:
        ct: the continually pre-trained checkpoint.
        sft: the instruction-tuned checkpoint.

    Returns:
        A `PairCheck`: `compatible` (with notes such as an extended vocabulary), `incompatible`
        (every reason found: different base, architecture, shapes, vocabulary) or `unverified`
        (an entry was recorded without reading its config.json, so shapes are unknown).
    """
    reasons: list[str] = []
    notes: list[str] = []
    if ct.base.repo != sft.base.repo:
        reasons.append(f"different base: CT is on {ct.base.repo}, SFT on {sft.base.repo}")
    elif ct.base.revision and sft.base.revision and ct.base.revision != sft.base.revision:
        notes.append(f"base revisions differ ({ct.base.revision[:7]} vs {sft.base.revision[:7]}); the merge uses one")
    if ct.adapter is not None and not reasons:
        notes.append(
            f"CT is a LoRA adapter (r {ct.adapter.r}) of {ct.base.repo}: the merge applies it to the base "
            "(the recipe's base_model)"
        )
    if ct.shape is None or sft.shape is None:
        unverified = [entry.id for entry in (ct, sft) if entry.shape is None]
        if reasons:
            return _verdict(ct, sft, "incompatible", reasons, notes)
        notes.append(
            "shapes not verified for " + ", ".join(unverified) + ": add them again against a Hub that holds them"
        )
        return _verdict(ct, sft, "unverified", reasons, notes)
    if ct.shape.architecture != sft.shape.architecture or ct.shape.model_type != sft.shape.model_type:
        reasons.append(
            f"architecture: CT is {ct.shape.architecture} ({ct.shape.model_type}), "
            f"SFT is {sft.shape.architecture} ({sft.shape.model_type})"
        )
    ct_body, sft_body = ct.shape.body(), sft.shape.body()
    differing = [
        f"{name} {ct_body[name]} vs {sft_body[name]}"
        for name in ct_body
        if name not in ("architecture", "model_type") and ct_body[name] != sft_body[name]
    ]
    if differing:
        reasons.append("shapes (CT vs SFT): " + ", ".join(differing))
    reasons.extend(_vocabulary_reasons(ct, sft, notes))
    return _verdict(ct, sft, "incompatible" if reasons else "compatible", reasons, notes)


def _vocabulary_reasons(ct: CtEntry, sft: SftEntry, notes: list[str]) -> list[str]:
    assert ct.shape is not None and sft.shape is not None
    ct_vocab, sft_vocab = ct.shape.vocab_size, sft.shape.vocab_size
    base_vocab = ct.tokenizer.base_vocab_size if ct.tokenizer else None
    if base_vocab is not None and sft_vocab != base_vocab:
        return [
            f"vocabulary: SFT has {sft_vocab} tokens but the base has {base_vocab}; "
            "an SFT checkpoint must keep the base vocabulary"
        ]
    if ct_vocab == sft_vocab:
        return []
    if ct_vocab > sft_vocab:
        notes.append(
            f"CT vocabulary extended by {ct_vocab - sft_vocab} tokens ({sft_vocab} → {ct_vocab}): "
            "compatible; merge with `tokenizer_source: ct` (the added embedding rows come from the CT model)"
        )
        return []
    return [f"vocabulary: CT has {ct_vocab} tokens, fewer than the SFT checkpoint's {sft_vocab}"]


def _verdict(ct: CtEntry, sft: SftEntry, status: PairStatus, reasons: list[str], notes: list[str]) -> PairCheck:
    return PairCheck(
        ct_id=ct.id, sft_id=sft.id, language=ct.language, status=status, reasons=tuple(reasons), notes=tuple(notes)
    )


def ct_sft_baselines(ct: CtEntry, entries: Iterable[object]) -> tuple[str, ...]:
    """IDs of the CT-then-SFT entries fine-tuned from `ct` (same repo and revision), sorted."""
    return tuple(
        sorted(
            e.id
            for e in entries
            if isinstance(e, CtSftEntry) and e.ct.repo == ct.repo and e.ct.revision in (None, ct.revision)
        )
    )


def find_pairs(
    entries: Iterable[CtEntry | SftEntry | CtSftEntry | MergeEntry], *, language: str | None = None
) -> list[PairCheck]:
    """Check every CT × SFT pair in a catalog.

    Args:
        entries: catalog entries (merges are ignored; CT-then-SFT entries become the pairs' baselines).
        language: only CT checkpoints of this language.

    Returns:
        One `PairCheck` per pair, ordered by language, CT id, SFT id.
    """
    entries = list(entries)
    cts = [e for e in entries if isinstance(e, CtEntry) and (language is None or e.language == language)]
    sfts = [e for e in entries if isinstance(e, SftEntry)]
    checks = [
        check_pair(ct, sft).model_copy(update={"ct_sft_ids": ct_sft_baselines(ct, entries)})
        for ct in cts
        for sft in sfts
    ]
    return sorted(checks, key=lambda c: (c.language, c.ct_id, c.sft_id))
