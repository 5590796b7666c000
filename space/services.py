"""The Space's handlers: plain values in, plain values out, our errors raised (no Gradio here).

`SpaceServices` holds what one Space process shares between requests: the Hub client, the catalog
store, a short-lived catalog snapshot, the model cache and the bot client. `space.app` wires each
method to an event and turns a `RegistryError` into a `gr.Error` with its one-line message.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.catalog.entries import CtEntry, ModelRef, SftEntry
from registry.catalog.store import REGISTRY_REPO_NAME, CatalogStore
from registry.errors import CatalogError, HubAuthError, RegistryError
from space.bot_client import JOB_COLUMNS, MY_JOB_COLUMNS, BotClient, job_rows
from space.catalog_view import CatalogView, Trio, short_ref
from space.config import SpaceConfig
from space.errors import PromptError, SpaceError
from space.examples import load_examples
from space.generation import check_max_new_tokens, stream_text
from space.inputs import number, text, whole_number
from space.leaderboard import (
    BoardState,
    ModelScores,
    Score,
    bar_rows,
    board_state,
    collect_scores,
    failed_merges,
    leaderboard_rows,
    scatter_rows,
)
from space.merge_preview import MethodInfo, PreviewResult, available_methods, run_preview, screen_recipe
from space.models import ModelCache, ModelLoader
from space.submit import check_ct_or_hub_error

if TYPE_CHECKING:
    from registry.recipe import Recipe

logger = logging.getLogger(__name__)

BOT_HEALTH_TIMEOUT_S = 3.0  # the status line asks the bot's /healthz; a slow bot must not hold a worker


@dataclass(frozen=True)
class MergeInputs:
    """The Merge tab's settings, checked, with the catalog entries they name."""

    cts: tuple[CtEntry, ...]
    sft: SftEntry
    method: str
    density: float
    slack: float
    ct_weight: float
    sft_weight: float


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


def _anonymous_or(endpoint: str, cache_dir: Path | None) -> Callable[[str | None], Any]:
    def client(token: str | None) -> Any:
        from registry.hub import HubClient

        # False, not None: huggingface_hub would fall back to HF_TOKEN (the Space's own token).
        return HubClient(endpoint=endpoint, token=token or False, cache_dir=cache_dir)  # type: ignore[arg-type]

    return client


class SpaceServices:
    """Everything the app's events call.

    Two kinds of Hub client: the Space's own (`hub`, its `HF_TOKEN`) reads the registry repo and
    nothing else; every read of a model on a visitor's behalf goes through `visitor_hub(token)`,
    with the visitor's own token or anonymously, so a visitor never sees or runs a repo they could
    not read themselves.

    Args:
        config: the Space's settings.
        hub: a `registry.hub.HubClient` (default: one for `config.endpoint` / `config.token`).
        visitor_hub: token (None: anonymous) -> a `HubClient` acting for that visitor.
    """

    def __init__(
        self, config: SpaceConfig, *, hub: Any = None, visitor_hub: Callable[[str | None], Any] | None = None
    ) -> None:
        from registry.hub import HubClient

        self.config = config
        self.hub: Any = hub or HubClient(endpoint=config.endpoint, token=config.token)
        self.visitor_hub = visitor_hub or _anonymous_or(config.endpoint, getattr(self.hub, "cache_dir", None))
        self._visible: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self.bot = BotClient(config.bot_url)
        self.models = ModelCache(ModelLoader(self.hub, device=config.device), budget=config.cache_bytes)
        self._lock = threading.Lock()
        self._store: CatalogStore | None = None
        self._view: tuple[float, CatalogView] | None = None
        self._card_scores: dict[tuple[str, str | None], list[Score]] = {}
        self._workdir: Path | None = config.workdir
        self._bot_line: tuple[float, str] | None = None  # (when, the status line's bot part)

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
        """A catalog snapshot at most `config.catalog_ttl_s` old (`fresh`: read it now).

        Raises:
            CatalogError, HubError: the registry cannot be read (the Hub is down, say).
        """
        with self._lock:
            cached = self._view
        if cached is not None and not fresh and time.monotonic() - cached[0] < self.config.catalog_ttl_s:
            return cached[1]
        view = CatalogView.load(self.store())
        with self._lock:
            self._view = (time.monotonic(), view)
        return view

    def status(self, token: str | None = None) -> str:
        """One line on what this Space is connected to, or what is unreachable (never raises)."""
        parts = [f"Hub `{self.config.endpoint}`"]
        try:
            view = self.visible_view(token)
            parts.append(
                f"registry {view.repo_id}: {len(view.cts)} CT, {len(view.sfts)} SFT, "
                + (f"{len(view.ct_sfts)} CT-then-SFT, " if view.ct_sfts else "")
                + f"{len(view.merges)} merge{'' if len(view.merges) == 1 else 's'}"
            )
        except RegistryError as exc:
            parts.append(f"⚠ {exc}")
        parts.append(self._bot_status())
        return " · ".join(parts)

    def _bot_status(self) -> str:
        """`bot [url](url/healthz): 2 jobs queued, 1 running`, or why there is none (never raises).

        The answer is shared by every visitor for up to 5 s (half the status period when shorter):
        many open pages ticking do not each ask the bot.
        """
        bot = self.config.bot_url.rstrip("/") if self.config.bot_url else None
        if not bot:
            return "no bot configured (Submit is off)"
        keep = min(5.0, self.config.status_every_s / 2)
        with self._lock:
            cached = self._bot_line
        if cached is not None and time.monotonic() - cached[0] < keep:
            return cached[1]
        try:
            health = BotClient(bot, timeout=BOT_HEALTH_TIMEOUT_S).health()
            queued, running = int(health.get("queued") or 0), int(health.get("running") or 0)
            line = f"bot [{bot}]({bot}/healthz): {queued} job{'' if queued == 1 else 's'} queued, {running} running"
        except (SpaceError, ValueError, TypeError):
            line = f"bot [{bot}]({bot}/healthz) unreachable (Submit waits for it)"
        with self._lock:
            self._bot_line = (time.monotonic(), line)
        return line

    def languages(self, token: str | None = None) -> list[str]:
        """Languages with a CT checkpoint or a merge that the visitor can read."""
        return self.visible_view(token).languages()

    def trios(self, language: str | None, token: str | None = None) -> list[Trio]:
        """Merged models of a language with their CT and SFT, among those the visitor can read."""
        return self.visible_view(token).trios(language or None)

    def trio_for(self, merged: str, token: str | None = None) -> Trio | None:
        """The trio whose merged model is `merged` (`repo@revision` or `repo`)."""
        for trio in self.trios(None, token):
            if merged in (trio.merged, trio.merge.output_repo):
                return trio
        return None

    def examples(self, language: str | None) -> list[str]:
        """Prompt examples in the language (FLORES / SIB text), if the Space has data for it."""
        if not language:
            return []
        return load_examples(language, data_dir=self.config.data_dir, hub=self.hub, repo=self.config.examples_repo)

    def registry_rows(self, language: str | None = None, token: str | None = None) -> list[dict[str, str]]:
        """The Registry tab: entries with their lineage and revisions (only repos the visitor can read)."""
        return self.visible_view(token).registry_rows(language or None)

    # -- what a visitor may see ----------------------------------------------------------------
    def readable(self, repos: set[str], token: str | None) -> frozenset[str]:
        """The repos among `repos` that the visitor (their token, or anonymous) can read.

        One listing per owner (`GET /api/models?author=`), which the Hub filters by the caller's
        rights, cached `config.visible_ttl_s` per visitor: a private repo never reaches a visitor who cannot
        read it, and its existence is not revealed either.
        """
        who = hashlib.sha256((token or "").encode()).hexdigest()[:16]
        hub: Any = None
        seen: set[str] = set()
        for owner in sorted({r.split("/", 1)[0] for r in repos}):
            key = (who, owner)
            with self._lock:
                cached = self._visible.get(key)
            if cached is None or time.monotonic() - cached[0] >= self.config.visible_ttl_s:
                hub = hub or self.visitor_hub(token)
                try:
                    ids = frozenset(str(m.id) for m in hub.list_models(author=owner))
                except RegistryError as exc:
                    logger.info("cannot list %s's models for a visitor: %s", owner, exc)
                    ids = frozenset()
                cached = (time.monotonic(), ids)
                with self._lock:
                    self._visible[key] = cached
            seen |= cached[1]
        return frozenset(r for r in repos if r in seen)

    def visible_view(self, token: str | None) -> CatalogView:
        """The catalog with only the entries whose repos (a merge: its output) the visitor can read."""
        view = self.view()
        repos = {e.repo for e in (*view.cts, *view.sfts, *view.ct_sfts)} | {m.output_repo for m in view.merges}
        return view.only(self.readable(repos, token))

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        model_id: Any,
        prompt: Any,
        max_new_tokens: Any,
        temperature: Any = 0.0,
        *,
        token: str | None = None,
    ) -> Iterator[str]:
        """Stream a model's answer to a prompt (the text so far after each token).

        Args:
            model_id: `owner/name[@revision]`, read with the visitor's token (or anonymously).
            prompt: at most `MAX_PROMPT_CHARS` characters.
            max_new_tokens: 1 to `config.max_new_tokens`.
            temperature: 0 (greedy) to 2.
            token: the visitor's Hub token (None: anonymous; never the Space's own).

        Raises:
            PromptError, ModelTooLargeError, UnsupportedModelError, Hub errors: before generating.
        """
        model_id, n, t, prompt = self.check_generate(model_id, prompt, max_new_tokens, temperature)
        loaded = self.models.get(model_id, hub=self.visitor_hub(token))
        yield from stream_text(loaded, prompt, max_new_tokens=n, temperature=t)

    def check_generate(
        self, model_id: Any, prompt: Any, max_new_tokens: Any, temperature: Any
    ) -> tuple[str, int, float, str]:
        """Every generation argument checked, in order, before any model is touched.

        Raises:
            PromptError: the first bad argument, named, with its allowed range.
        """
        if not isinstance(model_id, str | None):
            raise PromptError(f"model_id must be a repo id (owner/name), not {type(model_id).__name__}")
        model_id = (model_id or "").strip()
        if not model_id:
            raise PromptError("no model chosen: pick a language and a merged model, or give a repo id")
        try:
            model_id = str(ModelRef.parse(model_id))
        except ValueError as exc:
            raise PromptError(str(exc)) from exc
        prompt = text(prompt, name="the prompt", max_chars=self.config.max_prompt_chars)
        n = whole_number(max_new_tokens, name="max_new_tokens", low=1, high=self.config.max_new_tokens)
        t = number(0.0 if temperature is None else temperature, name="temperature", low=0.0, high=2.0)
        return model_id, n, t, prompt

    # -- leaderboard ---------------------------------------------------------------------------
    def _scores_of(self, repo: str, revision: str | None) -> list[Score]:
        from space.leaderboard import scores_from_card

        key = (repo, revision)
        with self._lock:
            if key in self._card_scores:
                return self._card_scores[key]
        # Anonymously: a card's numbers are shown to everyone, so only a public card is read.
        scores = scores_from_card(self.visitor_hub(None))(repo, revision)
        if revision and len(revision) == 40:  # a commit never changes: keep its card's numbers
            with self._lock:
                self._card_scores[key] = scores
        return scores

    def scores(self, token: str | None = None) -> list[ModelScores]:
        """Every catalog model the visitor can read, with its eval results."""
        return collect_scores(self.visible_view(token), self._scores_of)

    def leaderboard(
        self,
        language: str | None = None,
        method: str | None = None,
        search: str | None = "",
        sort_by: str | None = None,
        *,
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """Leaderboard rows (see `space.leaderboard.leaderboard_rows`) of the models the visitor can read."""
        for name, value in (("language", language), ("method", method), ("search", search), ("sort_by", sort_by)):
            if not isinstance(value, str | None):
                raise PromptError(f"{name} must be text, not {type(value).__name__}")
        search = text(search, name="search", max_chars=200, required=False)
        if language:
            self._check_language(language, token)
        return leaderboard_rows(
            self.scores(token),
            language=language or None,
            method=method or None,
            search=search or "",
            sort_by=sort_by or None,
            endpoint=self.config.endpoint,
        )

    def board(self, language: Any, method: Any, search: Any, sort_by: Any, *, token: str | None = None) -> BoardState:
        """The Leaderboard tab's state for these controls (see `space.leaderboard.board_state`)."""
        for name, value in (("language", language), ("method", method), ("search", search), ("sort_by", sort_by)):
            if not isinstance(value, str | None):
                raise PromptError(f"{name} must be text, not {type(value).__name__}")
        search = text(search, name="search", max_chars=200, required=False)
        if language:
            self._check_language(language, token)
        return board_state(
            self.scores(token), language=language or None, method=method or None, search=search,
            sort_by=sort_by or None, endpoint=self.config.endpoint,
        )  # fmt: skip

    def failed_merges(self, token: str | None = None) -> list[dict[str, str]]:
        """Failed merge jobs of the catalog whose CT the visitor can read (their output repo may not exist)."""
        view = self.view()
        cts = {m.output_repo: next((i.repo for i in m.inputs if i.role == "ct"), "") for m in view.merges}
        readable = self.readable({c for c in cts.values() if c}, token)
        return [f for f in failed_merges(view) if cts.get(f["output"]) in readable]

    def plots(
        self, language: str | None, token: str | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(grouped bars CT / SFT / merged for the language, gain-kept scatter)."""
        scores = self.scores(token)
        return (bar_rows(scores, language) if language else []), scatter_rows(scores, language or None)

    def _check_language(self, language: str, token: str | None = None) -> None:
        known = self.languages(token)
        if language not in known:
            raise SpaceError(
                f"no model in registry {self.store().repo_id} for language {language!r}; "
                f"known: {', '.join(known) or 'none yet'}"
            )

    # -- merge ---------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """Merge methods the engine offers."""
        return [m.name for m in available_methods()]

    def method_infos(self) -> list[MethodInfo]:
        """The methods with the parameters each takes (the Merge tab shows only those)."""
        return available_methods()

    def checkpoint_choices(self, token: str | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(CT, SFT) choices of the catalog that the visitor can read: (`repo@short-sha`, entry id) pairs."""
        view = self.visible_view(token)

        def label(entry: CtEntry | SftEntry) -> str:
            return short_ref(str(ModelRef(repo=entry.repo, revision=entry.revision or None)))

        return [(label(c), c.id) for c in view.cts], [(label(s), s.id) for s in view.sfts]

    def workdir(self) -> Path:
        with self._lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="mergeling-space-"))
            self._workdir.mkdir(parents=True, exist_ok=True)
            return self._workdir

    def merge_inputs(
        self,
        ct_id: str | list[str] | None,
        sft_id: str | None,
        method: str | None,
        density: Any,
        slack: Any,
        ct_weight: Any = 1.0,
        sft_weight: Any = 1.0,
        *,
        token: str | None = None,
    ) -> MergeInputs:
        """The Merge tab's settings checked, each with a one-line refusal, and its entries found.

        Args:
            ct_id: a CT entry id or repo id; several (a list, or comma-separated) make a group merge.
            sft_id: an SFT entry id or repo id.
            method: a method of the engine's registry.
            density: the kept fraction (methods that trim).
            slack: TIES-SV's slack.
            ct_weight / sft_weight: the inputs' weights (0 to 2).
            token: the visitor's Hub token (None: anonymous): only entries they can read are found.

        Raises:
            SpaceError: an argument out of range, unknown entries or method.
        """
        density_value = number(0.2 if density is None else density, name="density", low=0.0, high=1.0, low_open=True)
        slack_value = number(0.0 if slack is None else slack, name="slack", low=0.0, high=1.0)
        weights = tuple(
            number(1.0 if value is None else value, name=name, low=0.0, high=2.0)
            for name, value in (("ct_weight", ct_weight), ("sft_weight", sft_weight))
        )
        view = self.visible_view(token)
        if not isinstance(ct_id, list | str | None) or not isinstance(sft_id, str | None):
            raise SpaceError("ct_id and sft_id must be entry ids or repo ids (text)")
        names = ct_id if isinstance(ct_id, list) else (ct_id or "").split(",")
        names = [str(n).strip() for n in names if n and str(n).strip()]
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
        return MergeInputs(
            cts=tuple(cts), sft=sft, method=method, density=density_value, slack=slack_value,
            ct_weight=weights[0], sft_weight=weights[1],
        )  # fmt: skip

    def merge_preview(
        self,
        ct_id: str | list[str] | None,
        sft_id: str | None,
        method: str | None,
        density: Any,
        slack: Any,
        ct_weight: Any = 1.0,
        sft_weight: Any = 1.0,
        *,
        token: str | None = None,
    ) -> PreviewResult:
        """Merge catalog CT(s) and an SFT here (lab-size only) and return the diagnostics.

        Arguments as `merge_inputs`; the inputs are downloaded with the visitor's token.

        Raises:
            SpaceError: bad settings, unknown entries or method; MergeTooLargeError: hand it to the bot;
            the engine's errors (RecipeError, CompatibilityError, ...) unchanged.
        """
        got = self.merge_inputs(ct_id, sft_id, method, density, slack, ct_weight, sft_weight, token=token)
        return run_preview(
            self.visitor_hub(token),
            cts=list(got.cts),
            sft=got.sft,
            method=got.method,
            density=got.density,
            slack=got.slack,
            ct_weight=got.ct_weight,
            sft_weight=got.sft_weight,
            workdir=self.workdir(),
            max_parameters=self.config.merge_max_parameters,
        )

    def hand_to_bot(
        self,
        ct_id: str | list[str] | None,
        sft_id: str | None,
        method: str | None,
        density: Any,
        slack: Any,
        ct_weight: Any = 1.0,
        sft_weight: Any = 1.0,
        *,
        token: str | None = None,
    ) -> list[SubmitResult]:
        """ "Hand to the bot": each chosen CT submitted with the recipe on screen (as the visitor).

        The recipe is `screen_recipe` (the engine's typed `Recipe`, validated here first), one per CT
        (the bot merges one CT with an SFT per job), sent whole (`recipe.text`); the bot puts the job's
        pinned CT, SFT and base in place of its references.

        Raises:
            SignInRequiredError: anonymous; SpaceError / RecipeError: bad settings, before the bot is asked;
            BotUnavailableError / BotRequestError: as `submit`.
        """
        from space.errors import SignInRequiredError

        if not token:
            raise SignInRequiredError("sign in with Hugging Face to hand a merge to the bot: it runs the job as you")
        got = self.merge_inputs(ct_id, sft_id, method, density, slack, ct_weight, sft_weight, token=token)
        recipes = [
            screen_recipe(method=got.method, cts=[ct], sft=got.sft, density=got.density, slack=got.slack,
                          ct_weight=got.ct_weight, sft_weight=got.sft_weight)
            for ct in got.cts
        ]  # fmt: skip
        return [
            self.submit(ct.repo, ct.language, token=token, recipe=recipe)
            for ct, recipe in zip(got.cts, recipes, strict=True)
        ]

    def generate_local(self, out: Path, prompt: str | None, max_new_tokens: int = 32) -> str:
        """The answer of a merge made here (loaded for this call only, never cached)."""
        prompt = text(prompt, name="the prompt", max_chars=self.config.max_prompt_chars)
        n = check_max_new_tokens(max_new_tokens, limit=self.config.max_new_tokens)
        loaded = self.models.loader.load_dir(out, key=str(out))
        pieces = list(stream_text(loaded, prompt, max_new_tokens=n))
        return pieces[-1] if pieces else ""

    # -- submit and jobs -----------------------------------------------------------------------
    def whoami(self, token: str | None) -> str | None:
        """The visitor's username, or None (anonymous, or a token the Hub does not know)."""
        if not token:
            return None
        try:
            return str(self.visitor_hub(token).whoami())
        except RegistryError:
            return None

    def submit(
        self, ct_repo_id: Any, language: Any = None, *, token: str | None = None, recipe: Recipe | None = None
    ) -> SubmitResult:
        """Check a CT repo as the visitor sees it and enqueue its merges with the bot, as the visitor.

        Args:
            ct_repo_id: the CT repo (`owner/name`).
            language: the language when the card gives none (`ben_Beng`).
            token: the signed-in visitor's Hub token; the bot receives it (never the Space's own).
            recipe: the recipe to merge with (the Merge tab's); None: the bot's own for the language.

        Raises:
            SignInRequiredError: no token (an anonymous visitor).
            BotUnavailableError: no bot, or unreachable (after the checks passed).
            BotRequestError: the bot refused (its reasons are in the message).
        """
        from space.errors import SignInRequiredError

        if not token:
            raise SignInRequiredError("sign in with Hugging Face to submit: the bot runs the job as you")
        for name, value in (("ct_repo_id", ct_repo_id), ("language", language)):
            if not isinstance(value, str | None):
                raise PromptError(f"{name} must be text, not {type(value).__name__}")
        try:
            view: CatalogView | None = self.view(fresh=True)
        except RegistryError as exc:
            logger.info("registry unreadable during submit: %s", exc)
            view = None
        hub = self.visitor_hub(token)
        check = check_ct_or_hub_error(hub, view, ct_repo_id or "", language=language)
        if not check.ok:
            return SubmitResult(job_ids=(), reasons=check.reasons, message=check.message())
        submitted = self.bot.submit(
            check.repo, token=token, language=check.language, recipe=recipe.to_yaml() if recipe is not None else None
        )
        ids = tuple(submitted.ids)
        done = [j for j in submitted.jobs if j.get("state") == "published" and j.get("output_repo")]
        if done:
            links = ", ".join(f"{self.repo_url(str(j['output_repo']))}" for j in done)
            return SubmitResult(
                job_ids=ids, reasons=(), message=f"{check.repo} is already merged and published: {links}"
            )
        return SubmitResult(job_ids=ids, reasons=(), message=f"{check.message()}; bot jobs: {', '.join(ids) or 'none'}")

    def use_snippet(self, model_ref: str, token: str | None = None) -> tuple[str, str]:
        """("use this model" Python code, the `registry merge` recipe that made it) for `repo@sha`.

        The recipe is the repo's `mergeling_recipe.yaml`, read as the visitor; a repo without one
        (pushed by hand) says so.
        """
        ref = ModelRef.parse(model_ref)
        repo, revision = ref.repo, ref.revision
        endpoint = self.config.endpoint.rstrip("/")
        lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
        if endpoint != "https://huggingface.co":
            lines.insert(0, f"# on this Hub: export HF_ENDPOINT={endpoint}")
        lines += [
            f'repo, revision = "{repo}", "{revision or "main"}"',
            "tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)",
            "model = AutoModelForCausalLM.from_pretrained(repo, revision=revision)",
            'ids = tokenizer("আমি", return_tensors="pt").input_ids',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=32)[0], skip_special_tokens=True))",
        ]
        try:
            raw = self.visitor_hub(token).read_file(repo, "mergeling_recipe.yaml", revision=revision or None)
            recipe = raw.decode("utf-8", errors="replace")
            recipe = f"# registry merge recipe.yaml --out ./merged   (the recipe of {repo})\n{recipe}"
        except RegistryError:
            recipe = f"# {repo} has no mergeling_recipe.yaml (pushed without one): no recipe to show"
        return "\n".join(lines), recipe

    def repo_url(self, repo: str) -> str:
        """A link to a model repo that resolves (see `space.leaderboard.repo_link`)."""
        from space.leaderboard import repo_link

        return repo_link(self.config.endpoint, repo)

    def job_status(self, job_id: Any) -> str:
        """The state of one bot job (`queued`, `running`, `published`, `failed: <error>`...)."""
        if not isinstance(job_id, str | None):
            raise PromptError(f"job_id must be text, not {type(job_id).__name__}")
        job_id = (job_id or "").strip()
        if not job_id:
            raise SpaceError("no job id given: pick one from My jobs")
        job = self.bot.job(job_id)
        state = str(job.get("state"))
        return f"{state}: {job['error']}" if state == "failed" and job.get("error") else state

    def my_jobs(self, token: str | None) -> tuple[list[str], list[list[Any]]]:
        """(columns, rows) of the visitor's bot jobs, newest first: `GET /jobs?mine=true` with their own
        token (the bot lists the jobs its user submitted, from the Space, the API or a webhook of
        theirs). Anonymous visitors have none.

        Raises:
            BotUnavailableError, BotRequestError: the bot cannot list its jobs (or does not know the token).
        """
        if not token:
            return list(MY_JOB_COLUMNS), []
        jobs = self.bot.jobs(limit=200, token=token, mine=True)
        return list(MY_JOB_COLUMNS), [self._job_row(j) for j in jobs]

    def _job_row(self, job: dict[str, Any]) -> list[Any]:
        def link(text: str | None, url: str | None) -> str:
            return f"[{text}]({url})" if text and url else (text or "")

        # The bot's own links (docs/bot.md: `links.output`, `links.discussion`, `links.job`), else ours.
        given = job.get("links")
        links: dict[str, Any] = given if isinstance(given, dict) else {}
        out = job.get("output_repo")
        job_url = links.get("job") or (f"{self.bot.url}/jobs/{job.get('id')}" if self.bot.url else None)
        published = job.get("state") == "published"
        out_url = self.repo_url(str(out)) if out and (published or links.get("output")) else None
        discussion = links.get("discussion") or job.get("discussion")
        state = str(job.get("state"))
        if state == "failed" and job.get("error"):
            state = f"failed: {job['error']}"
        return [
            link(str(job.get("id")), job_url),
            state,
            job.get("language") or "",
            link(job.get("ct_repo"), self.repo_url(str(job["ct_repo"])) if job.get("ct_repo") else None),
            link(out, out_url),
            link("discussion", discussion) if discussion else "",
            job.get("updated_at") or "",
        ]

    def jobs(self) -> tuple[list[str], list[list[Any]]]:
        """(columns, rows) of the bot's queue, newest first (every user's: for operators, not the page)."""
        return list(JOB_COLUMNS), job_rows(self.bot.jobs())
