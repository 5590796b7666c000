"""`registry sync`: discover CT and SFT checkpoints from model-card metadata on the Hub.

A model opts in with a card tag: `mergeling-ct` (with `language` and `base_model`, optionally
`ct_tokens`) or `mergeling-sft` (with `base_model`, optionally `datasets`). Each candidate is then
verified exactly like `registry add`; those already recorded are left alone and those that cannot
be verified are skipped with the reason, so one bad card never blocks the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from registry.catalog.entries import CtEntry, SftEntry, language_from_card
from registry.catalog.verify import build_ct_entry, build_sft_entry
from registry.errors import CatalogError
from registry.progress import progress_bar

logger = logging.getLogger(__name__)

CT_TAG = "mergeling-ct"
SFT_TAG = "mergeling-sft"


class DiscoveryHub(Protocol):
    """The Hub operations sync needs."""

    def list_models(self, *, filter: str, card_data: bool = True) -> Iterable[Any]: ...

    def model_info(self, repo_id: str, *, revision: str | None = None) -> Any: ...

    def read_file(self, repo_id: str, path: str, *, repo_type: str, revision: str) -> bytes: ...


@dataclass(frozen=True)
class Discovery:
    """What sync found: new entries to record, IDs already recorded, and skipped repos with reasons."""

    new: tuple[CtEntry | SftEntry, ...]
    present: tuple[str, ...]
    skipped: tuple[str, ...]


def ct_fields_from_card(card: dict[str, Any]) -> tuple[str, str, int | None]:
    """Read (language, base, CT tokens) from a CT model card's metadata.

    The target language is the card's one non-English language (a CT card often lists English
    too, since continued pre-training mixes some in).

    Raises:
        ValueError: no usable language, several target languages, or no single base_model.
    """
    languages = card.get("language") or []
    languages = [languages] if isinstance(languages, str) else list(languages)
    mapped = {code for code in (language_from_card(str(value)) for value in languages) if code and code != "eng_Latn"}
    if not mapped:
        raise ValueError(
            f"card language {languages or '(none)'} names no target language; use a code like ben_Beng or bn"
        )
    if len(mapped) > 1:
        raise ValueError(f"card names several target languages {sorted(mapped)}; a CT entry has one")
    tokens = card.get("ct_tokens")
    if tokens is not None and (not isinstance(tokens, int) or tokens < 0):
        raise ValueError(f"card ct_tokens {tokens!r} is not a non-negative integer")
    return mapped.pop(), _single_base(card), tokens


def sft_fields_from_card(card: dict[str, Any]) -> tuple[str, str | None]:
    """Read (base, training data) from an SFT model card's metadata.

    Raises:
        ValueError: when the card has no single base_model.
    """
    datasets = card.get("datasets") or []
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    return _single_base(card), (", ".join(str(d) for d in datasets) or None)


def _single_base(card: dict[str, Any]) -> str:
    base = card.get("base_model")
    bases = [base] if isinstance(base, str) else list(base or [])
    if len(bases) != 1:
        raise ValueError(f"card base_model is {bases or '(missing)'}; a checkpoint entry needs exactly one")
    return str(bases[0])


def discover(hub: DiscoveryHub, *, known_ids: set[str], progress: bool = False) -> Discovery:
    """List tagged models on the Hub and build entries for the ones not yet recorded.

    Args:
        hub: the Hub client.
        known_ids: IDs already in the catalog.
        progress: show a progress bar on stderr while verifying candidates.

    Returns:
        The new (verified) entries, the IDs already present, and the skipped repos with reasons.
    """
    new: list[CtEntry | SftEntry] = []
    present: list[str] = []
    skipped: list[str] = []
    candidates = [(tag, info) for tag in (CT_TAG, SFT_TAG) for info in hub.list_models(filter=tag, card_data=True)]
    for tag, info in progress_bar(candidates, desc="Verifying", unit="model", enabled=progress):
        repo = info.id
        card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else {}
        try:
            entry = _entry_from_card(hub, repo, card, kind="ct" if tag == CT_TAG else "sft")
        except (ValueError, CatalogError) as exc:
            skipped.append(f"{repo}: {exc}")
            logger.debug("sync skipped %s: %s", repo, exc)
            continue
        if entry.id in known_ids:
            present.append(entry.id)
        else:
            new.append(entry)
    return Discovery(new=tuple(new), present=tuple(present), skipped=tuple(skipped))


def _entry_from_card(hub: DiscoveryHub, repo: str, card: dict[str, Any], *, kind: str) -> CtEntry | SftEntry:
    if kind == "ct":
        language, base, tokens = ct_fields_from_card(card)
        return build_ct_entry(hub, repo=repo, revision=None, language=language, base=base, tokens=tokens, source="sync")
    base, data = sft_fields_from_card(card)
    return build_sft_entry(hub, repo=repo, revision=None, base=base, data=data, source="sync")
