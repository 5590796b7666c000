"""Check a CT repo before it is handed to the bot: exists, readable, card language and base, SFTs it pairs with.

Every reason it cannot be merged is collected (not only the first), as the bot's 422 does, so a
researcher fixes the card once. The bot checks again when it takes the job: this is for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.catalog.entries import language_from_card, validate_language, validate_repo_id
from registry.catalog.pairing import check_pair
from registry.catalog.verify import build_ct_entry, inspect_checkpoint
from registry.errors import CatalogError, HubError
from space.catalog_view import CatalogView


@dataclass(frozen=True)
class SubmitCheck:
    """The verdict on one CT repo."""

    repo: str
    language: str | None = None
    base: str | None = None
    compatible_sfts: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def message(self) -> str:
        """One line for the user."""
        if self.ok:
            return (
                f"{self.repo} ({self.language}, base {self.base}) can be merged with {', '.join(self.compatible_sfts)}"
            )
        return f"{self.repo} cannot be merged: " + "; ".join(self.reasons)


def card_language(card: dict[str, Any]) -> str | None:
    """The first non-English language of a card's `language` metadata, as a `ben_Beng` code."""
    values = card.get("language") or []
    for value in [values] if isinstance(values, str) else list(values):
        code = language_from_card(str(value))
        if code and code != "eng_Latn":
            return code
    return None


def check_ct(hub: Any, view: CatalogView | None, repo: str, *, language: str | None = None) -> SubmitCheck:
    """Check a CT repo against the Hub and the catalog's SFT checkpoints.

    Args:
        hub: a `registry.hub.HubClient`.
        view: the catalog (None when the registry cannot be read: the SFT check then says so).
        repo: the CT repo id (`owner/name`).
        language: the language when the card does not give one (`ben_Beng`).

    Returns:
        A `SubmitCheck` with every reason found (none: it can be merged).

    Raises:
        HubUnavailableError: the Hub cannot be reached at all.
    """
    repo = (repo or "").strip()
    language = (language or "").strip() or None
    try:
        validate_repo_id(repo)
    except ValueError as exc:
        return SubmitCheck(repo=repo or "(empty)", reasons=(str(exc),))
    if language:
        try:
            validate_language(language)
        except ValueError as exc:
            return SubmitCheck(repo=repo, reasons=(str(exc),))
    try:
        checkpoint = inspect_checkpoint(hub, repo)
    except CatalogError as exc:
        return SubmitCheck(repo=repo, reasons=(str(exc),))
    reasons: list[str] = []
    language = language or card_language(checkpoint.card)
    if language is None:
        reasons.append("its model card gives no language (add `language:` to the card, or enter it here)")
    bases = checkpoint.card_bases
    base = bases[0] if bases else None
    if base is None:
        reasons.append("its model card names no base_model (add `base_model:` with the model it was trained from)")
    if reasons or language is None or base is None:
        return SubmitCheck(repo=repo, language=language, base=base, reasons=tuple(reasons))
    try:
        entry = build_ct_entry(hub, repo=repo, revision=checkpoint.revision, language=language, base=base)
    except CatalogError as exc:
        return SubmitCheck(repo=repo, language=language, base=base, reasons=(str(exc),))
    if view is None:
        return SubmitCheck(repo=repo, language=language, base=base, reasons=("the registry cannot be read",))
    checks = [check_pair(entry, sft) for sft in view.sfts]
    compatible = tuple(sorted(c.sft_id for c in checks if c.compatible))
    if not compatible:
        if not checks:
            reasons.append(f"registry {view.repo_id} has no SFT checkpoint to merge with")
        for c in checks:
            reasons.append(f"not with {c.sft_id}: " + "; ".join(c.reasons or c.notes or (c.status,)))
    return SubmitCheck(repo=repo, language=language, base=base, compatible_sfts=compatible, reasons=tuple(reasons))


def check_ct_or_hub_error(hub: Any, view: CatalogView | None, repo: str, *, language: str | None) -> SubmitCheck:
    """`check_ct`, with a Hub failure turned into a reason (the Submit tab shows it as one line)."""
    try:
        return check_ct(hub, view, repo, language=language)
    except HubError as exc:
        return SubmitCheck(repo=repo, reasons=(str(exc),))
