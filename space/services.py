"""The Space's handlers: plain values in, plain values out, our errors raised (no Gradio here).

`SpaceServices` holds what one Space process shares between requests: the Hub client, the catalog
store, a short-lived catalog snapshot, the model cache and the bot client. `space.app` wires each
method to an event and turns a `RegistryError` into a `gr.Error` with its one-line message.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.catalog.entries import CtEntry, SftEntry, validate_repo_id
from registry.catalog.store import REGISTRY_REPO_NAME, CatalogStore
from registry.errors import CatalogError, HubAuthError, RegistryError
from space.bot_client import JOB_COLUMNS, BotClient, job_rows
from space.catalog_view import CatalogView, Trio
from space.config import SpaceConfig
from space.errors import PromptError, SpaceError
from space.examples import load_examples
from space.generation import check_max_new_tokens, stream_text
from space.leaderboard import ModelScores, Score, bar_rows, collect_scores, leaderboard_rows, scatter_rows
from space.merge_preview import PreviewResult, available_methods, run_preview
from space.models import ModelCache, ModelLoader
from space.submit import check_ct_or_hub_error

logger = logging.getLogger(__name__)

CATALOG_TTL_S = 15.0  # a catalog snapshot is reused this long; the Refresh buttons bypass it


@dataclass(frozen=True)
class SubmitResult:
    """What `/submit` answers: the job ids, or every reason the CT cannot be merged."""

    job_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_ids[0] if self.job_ids else None,
            "job_ids": list(self.job_ids),
            "reasons": list(self.reasons),
            "message": self.message,
        }


class SpaceServices:
    """Everything the app's events call.

    Args:
        config: the Space's settings.
        hub: a `registry.hub.HubClient` (default: one for `config.endpoint` / `config.token`).
    """

    def __init__(self, config: SpaceConfig, *, hub: Any = None) -> None:
        from registry.hub import HubClient

        self.config = config
        self.hub: Any = hub or HubClient(endpoint=config.endpoint, token=config.token)
        self.bot = BotClient(config.bot_url)
        self.models = ModelCache(ModelLoader(self.hub, device=config.device), budget=config.cache_bytes)
        self._lock = threading.Lock()
        self._store: CatalogStore | None = None
        self._view: tuple[float, CatalogView] | None = None
        self._card_scores: dict[tuple[str, str | None], list[Score]] = {}
        self._workdir: Path | None = config.workdir

    # -- the catalog ---------------------------------------------------------------------------
    def store(self) -> CatalogStore:
        """The registry repo: `--registry`, else `<token owner>/mergeling-registry`.

        Raises:
            CatalogError: no registry given and the token's owner is unknown.
        """
        with self._lock:
            if self._store is None:
                repo = self.config.registry
                if repo is None:
                    try:
                        repo = f"{self.hub.whoami()}/{REGISTRY_REPO_NAME}"
                    except HubAuthError as exc:
                        raise CatalogError(
                            f"no registry repo given and the token's owner is unknown ({exc}); start the Space with "
                            "--registry OWNER/NAME (or MERGELING_REGISTRY) or a valid HF_TOKEN"
                        ) from exc
                self._store = CatalogStore(hub=self.hub, repo_id=repo)
            return self._store

    def view(self, *, fresh: bool = False) -> CatalogView:
        """A catalog snapshot at most `CATALOG_TTL_S` old (`fresh`: read it now).

        Raises:
            CatalogError, HubError: the registry cannot be read (the Hub is down, say).
        """
        with self._lock:
            cached = self._view
        if cached is not None and not fresh and time.monotonic() - cached[0] < CATALOG_TTL_S:
            return cached[1]
        view = CatalogView.load(self.store())
        with self._lock:
            self._view = (time.monotonic(), view)
        return view

    def status(self) -> str:
        """One line on what this Space is connected to, or what is unreachable (never raises)."""
        parts = [f"Hub {self.config.endpoint}"]
        try:
            view = self.view()
            parts.append(
                f"registry {view.repo_id}: {len(view.cts)} CT, {len(view.sfts)} SFT, {len(view.merges)} merges"
            )
        except RegistryError as exc:
            parts.append(f"⚠ {exc}")
        parts.append(f"bot {self.config.bot_url}" if self.config.bot_url else "no bot configured (Submit is off)")
        return " · ".join(parts)

    def languages(self) -> list[str]:
        """Languages with a CT checkpoint or a merge."""
        return self.view().languages()

    def trios(self, language: str | None) -> list[Trio]:
        """Merged models of a language with their CT and SFT."""
        return self.view().trios(language or None)

    def trio_for(self, merged: str) -> Trio | None:
        """The trio whose merged model is `merged` (`repo@revision` or `repo`)."""
        for trio in self.trios(None):
            if merged in (trio.merged, trio.merge.output_repo):
                return trio
        return None

    def examples(self, language: str | None) -> list[str]:
        """Prompt examples in the language (FLORES / SIB text), if the Space has data for it."""
        if not language:
            return []
        return load_examples(language, data_dir=self.config.data_dir, hub=self.hub, repo=self.config.examples_repo)

    def registry_rows(self, language: str | None = None) -> list[dict[str, str]]:
        """The Registry tab: entries with their lineage and revisions."""
        return self.view().registry_rows(language or None)

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self, model_id: str | None, prompt: str | None, max_new_tokens: float | int | None, temperature: float = 0.0
    ) -> Iterator[str]:
        """Stream a model's answer to a prompt (the text so far after each token).

        Raises:
            PromptError, ModelTooLargeError, UnsupportedModelError, Hub errors: before generating.
        """
        model_id = (model_id or "").strip()
        if not model_id:
            raise PromptError("no model chosen: pick a language and a merged model, or give a repo id")
        try:
            validate_repo_id(model_id.partition("@")[0])
        except ValueError as exc:
            raise PromptError(str(exc)) from exc
        n = check_max_new_tokens(max_new_tokens, limit=self.config.max_new_tokens)
        if prompt is None or not prompt.strip():
            raise PromptError("the prompt is empty: type some text, or pick an example")
        loaded = self.models.get(model_id)
        yield from stream_text(loaded, prompt, max_new_tokens=n, temperature=float(temperature or 0.0))

    # -- leaderboard ---------------------------------------------------------------------------
    def _scores_of(self, repo: str, revision: str | None) -> list[Score]:
        from space.leaderboard import scores_from_card

        key = (repo, revision)
        with self._lock:
            if key in self._card_scores:
                return self._card_scores[key]
        scores = scores_from_card(self.hub)(repo, revision)
        if revision and len(revision) == 40:  # a commit never changes: keep its card's numbers
            with self._lock:
                self._card_scores[key] = scores
        return scores

    def scores(self, *, fresh: bool = False) -> list[ModelScores]:
        """Every catalog model with its eval results."""
        return collect_scores(self.view(fresh=fresh), self._scores_of)

    def leaderboard(
        self,
        language: str | None = None,
        method: str | None = None,
        search: str | None = "",
        sort_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Leaderboard rows (see `space.leaderboard.leaderboard_rows`)."""
        if language:
            self._check_language(language)
        return leaderboard_rows(
            self.scores(),
            language=language or None,
            method=method or None,
            search=search or "",
            sort_by=sort_by or None,
            endpoint=self.config.endpoint,
        )

    def plots(self, language: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(grouped bars CT / SFT / merged for the language, gain-kept scatter)."""
        scores = self.scores()
        return (bar_rows(scores, language) if language else []), scatter_rows(scores, language or None)

    def _check_language(self, language: str) -> None:
        known = self.languages()
        if language not in known:
            raise SpaceError(
                f"no model in registry {self.store().repo_id} for language {language!r}; "
                f"known: {', '.join(known) or 'none yet'}"
            )

    # -- merge ---------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """Merge methods the engine offers."""
        return [m.name for m in available_methods()]

    def checkpoint_choices(self) -> tuple[list[str], list[str]]:
        """(CT entry ids, SFT entry ids) of the catalog."""
        view = self.view()
        return [c.id for c in view.cts], [s.id for s in view.sfts]

    def workdir(self) -> Path:
        with self._lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="mergeling-space-"))
            self._workdir.mkdir(parents=True, exist_ok=True)
            return self._workdir

    def merge_preview(
        self,
        ct_id: str | list[str] | None,
        sft_id: str | None,
        method: str | None,
        density: float | None,
        slack: float | None,
    ) -> PreviewResult:
        """Merge catalog CT(s) and an SFT here (lab-size only) and return the diagnostics.

        Args:
            ct_id: a CT entry id or repo id; several (a list, or comma-separated) make a group merge.
            sft_id: an SFT entry id or repo id.
            method: a method of the engine's registry.
            density: the kept fraction (methods that trim).
            slack: TIES-SV's slack.

        Raises:
            SpaceError: unknown entries or method; MergeTooLargeError: hand it to the bot;
            the engine's errors (RecipeError, CompatibilityError, ...) unchanged.
        """
        view = self.view()
        names = ct_id if isinstance(ct_id, list) else (ct_id or "").split(",")
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            raise SpaceError("no CT checkpoint chosen: pick one (or several, for a group merge)")
        cts = []
        for name in names:
            ct = view.find_checkpoint(name)
            if not isinstance(ct, CtEntry):
                raise SpaceError(f"no CT checkpoint {name!r} in registry {view.repo_id}; pick one of the list")
            cts.append(ct)
        sft = view.find_checkpoint((sft_id or "").strip())
        if not isinstance(sft, SftEntry):
            raise SpaceError(f"no SFT checkpoint {sft_id!r} in registry {view.repo_id}; pick one of the list")
        methods = self.methods()
        if method not in methods:
            raise SpaceError(f"unknown merge method {method!r}: use one of {', '.join(methods)}")
        return run_preview(
            self.hub,
            cts=cts,
            sft=sft,
            method=method,
            density=float(0.2 if density is None else density),
            slack=float(0.0 if slack is None else slack),
            workdir=self.workdir(),
            max_parameters=self.config.merge_max_parameters,
        )

    def generate_local(self, out: Path, prompt: str | None, max_new_tokens: int = 32) -> str:
        """The answer of a merge made here (loaded for this call only, never cached)."""
        n = check_max_new_tokens(max_new_tokens, limit=self.config.max_new_tokens)
        loaded = self.models.loader.load_dir(out, key=str(out))
        pieces = list(stream_text(loaded, prompt, max_new_tokens=n))
        return pieces[-1] if pieces else ""

    # -- submit and jobs -----------------------------------------------------------------------
    def submit(self, ct_repo_id: str | None, language: str | None = None) -> SubmitResult:
        """Check a CT repo and enqueue its merges with the bot.

        Raises:
            BotUnavailableError: no bot, or unreachable (after the checks passed).
            BotRequestError: the bot refused (its reasons are in the message).
        """
        try:
            view: CatalogView | None = self.view(fresh=True)
        except RegistryError as exc:
            logger.info("registry unreadable during submit: %s", exc)
            view = None
        check = check_ct_or_hub_error(self.hub, view, ct_repo_id or "", language=language)
        if not check.ok:
            return SubmitResult(job_ids=(), reasons=check.reasons, message=check.message())
        submitted = self.bot.submit(check.repo, token=self.config.token, language=check.language)
        ids = tuple(submitted.ids)
        return SubmitResult(job_ids=ids, reasons=(), message=f"{check.message()}; bot jobs: {', '.join(ids) or 'none'}")

    def job_status(self, job_id: str | None) -> str:
        """The state of one bot job (`queued`, `running`, `published`, `failed: <error>`...)."""
        job_id = (job_id or "").strip()
        if not job_id:
            raise SpaceError("no job id given: copy one from the jobs table")
        job = self.bot.job(job_id)
        state = str(job.get("state"))
        return f"{state}: {job['error']}" if state == "failed" and job.get("error") else state

    def jobs(self) -> tuple[list[str], list[list[Any]]]:
        """(columns, rows) of the bot's queue, newest first."""
        return list(JOB_COLUMNS), job_rows(self.bot.jobs())
