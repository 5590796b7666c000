"""Eval results of every catalog model, the leaderboard table, and the data behind its plots.

Where the numbers come from: each catalog entry's `results` (the bot records a merge's, and the CT's
and SFT's it evaluated for it, on their entries), then the `model-index` of each model's card
(merges, CT, SFT and CT-then-SFT checkpoints alike; `registry.evaluate.model_index` writes it) for
what the entry lacks. Results of a `--limit` run keep that label in the metric name, so they are never shown as
full numbers.

The two fractions the lab uses (docs/lab.md), per merge:
- language gain kept: how far the merge's bits per byte in its language moved from the SFT's to
  the CT's, `(bpb_sft - bpb_merge) / (bpb_sft - bpb_ct)` on `flores_<lang>`;
- task gain kept: how far its English task accuracy moved from the CT's to the SFT's,
  `(acc_merge - acc_ct) / (acc_sft - acc_ct)` on `sib200_eng_Latn`.
1.0 means as good as the better input on that axis.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from registry.catalog.entries import CtEntry, CtSftEntry, EvalResult, SftEntry
from registry.errors import HubError
from space.catalog_view import CatalogView

logger = logging.getLogger(__name__)

TASK_METRIC = ("sib200_eng_Latn", "acc")
SCORED = ("merged", "evaluated", "published")  # merge states that made a model (others are jobs)
_LIMIT = " (--limit "


@dataclass(frozen=True)
class Score:
    """One number: task, metric (with a `--limit` label when partial) and value."""

    task: str
    metric: str
    value: float


@dataclass(frozen=True)
class ModelScores:
    """A catalog model and its eval results."""

    repo: str
    revision: str | None
    role: str  # ct | sft | ct_sft | merge
    languages: tuple[str, ...]
    method: str | None = None
    status: str | None = None
    ct: str | None = None  # merges: the CT and SFT repos they came from
    sft: str | None = None
    scores: tuple[Score, ...] = field(default_factory=tuple)

    def value(self, task: str, metric: str) -> float | None:
        """The value of one task/metric, or None."""
        return next((s.value for s in self.scores if s.task == task and s.metric == metric), None)


CardScores = Callable[[str, str | None], list[Score]]


def scores_from_card(hub: Any) -> CardScores:
    """A reader of a model card's `model-index` results through `hub` (a `registry.hub.HubClient`).

    A card without results, or a repo the Hub does not show, gives no scores (logged), never an error:
    one unreadable card must not empty the leaderboard.
    """

    def read(repo: str, revision: str | None) -> list[Score]:
        try:
            info = hub.model_info(repo, revision=revision)
        except HubError as exc:
            logger.info("no card results for %s: %s", repo, exc)
            return []
        card = getattr(info, "card_data", None)
        results = getattr(card, "eval_results", None) or []
        return [_card_score(r) for r in results]

    return read


def _card_score(result: Any) -> Score:
    task = str(result.task_name or result.dataset_config or result.dataset_name).split(" (", 1)[0]
    metric = str(result.metric_type)
    args = result.dataset_args or {}
    if isinstance(args, dict) and args.get("limit"):
        metric = f"{metric} (--limit {args['limit']})"
    return Score(task=task, metric=metric, value=float(result.metric_value))


def collect_scores(view: CatalogView, card_scores: CardScores) -> list[ModelScores]:
    """Every CT, SFT, CT-then-SFT and merge of the catalog with its results (entry results first, then the card's).

    A catalog result records how many examples it evaluated (`n`), not the `--limit` it ran with.
    Where a card of the catalog marks the same task and metric as `--limit n` with that same `n`
    (the bot evaluates a merge and its CT and SFT in one run, with one limit), the entry's number
    takes that label too: a CT's partial number then sits in the same column as its merge's, and a
    partial number never looks full.
    """
    cards: dict[tuple[str, str | None], list[Score]] = {}

    def card(repo: str, revision: str | None) -> list[Score]:
        if (repo, revision) not in cards:
            cards[repo, revision] = card_scores(repo, revision)
        return cards[repo, revision]

    checkpoints = (*view.cts, *view.sfts, *view.ct_sfts)
    merges = [m for m in view.merges if m.status in SCORED]  # failed or unfinished: jobs (see `failed_merges`)
    for entry in checkpoints:
        card(entry.repo, entry.revision if entry.verified else None)
    for merge in merges:
        if merge.output_revision:
            card(merge.output_repo, merge.output_revision)
    limits = {
        (s.task, base_metric(s.metric), s.metric) for scores in cards.values() for s in scores if _LIMIT in s.metric
    }

    def own(results: Iterable[EvalResult]) -> list[Score]:
        out = []
        for r in results:
            label = f"{r.metric}{_LIMIT}{r.n})" if r.n is not None else None
            metric = label if label and (r.task, r.metric, label) in limits else r.metric
            out.append(Score(task=r.task, metric=metric, value=r.value))
        return out

    def scores(entry: CtEntry | SftEntry | CtSftEntry) -> tuple[Score, ...]:
        # The numbers the bot recorded on the entry (it evaluates the CT and SFT of every merge), then the card's.
        return tuple(one_per_metric(own(entry.results), card(entry.repo, entry.revision if entry.verified else None)))

    models: list[ModelScores] = []
    for ct in view.cts:
        models.append(
            ModelScores(repo=ct.repo, revision=ct.revision, role="ct", languages=(ct.language,), scores=scores(ct))
        )
    for sft in view.sfts:
        models.append(
            ModelScores(repo=sft.repo, revision=sft.revision, role="sft", languages=("eng_Latn",), scores=scores(sft))
        )
    for both in view.ct_sfts:
        models.append(
            ModelScores(repo=both.repo, revision=both.revision, role="ct_sft", languages=(both.language,),
                        ct=both.ct.repo, scores=scores(both))
        )  # fmt: skip
    for merge in merges:
        merge_card = card(merge.output_repo, merge.output_revision) if merge.output_revision else []
        ct_repo = next((i.repo for i in merge.inputs if i.role == "ct"), None)
        sft_repo = next((i.repo for i in merge.inputs if i.role == "sft"), None)
        models.append(
            ModelScores(
                repo=merge.output_repo, revision=merge.output_revision, role="merge", languages=merge.languages,
                method=merge.method, status=merge.status, ct=ct_repo, sft=sft_repo,
                scores=tuple(one_per_metric(own(merge.results), merge_card)),
            )
        )  # fmt: skip
    return models


PUBLIC_HUB = "https://huggingface.co"


def repo_link(endpoint: str, repo: str) -> str:
    """A link to a model repo that resolves: its page on the Hub; on another endpoint (the embedded
    hub has no HTML pages) its `/api/models/<repo>` document."""
    endpoint = endpoint.rstrip("/")
    return f"{endpoint}/{repo}" if endpoint == PUBLIC_HUB else f"{endpoint}/api/models/{repo}"


def base_metric(metric: str) -> str:
    """`bits_per_byte` for `bits_per_byte (--limit 20)`."""
    return metric.split(_LIMIT, 1)[0]


def one_per_metric(entry: list[Score], card: list[Score]) -> list[Score]:
    """One score per (task, metric): the catalog entry's number, under the card's label when the card
    marks it as a `--limit` run (the entry records no limit; a partial number must never look full)."""
    labels = {(s.task, base_metric(s.metric)): s.metric for s in card}
    out = {(s.task, base_metric(s.metric)): Score(s.task, labels.get((s.task, s.metric), s.metric), s.value)
           for s in entry}  # fmt: skip
    for score in card:
        out.setdefault((score.task, base_metric(score.metric)), score)
    return list(out.values())


def failed_merges(view: CatalogView) -> list[dict[str, str]]:
    """Merges that made no model (failed), as jobs: output repo, method, languages, error."""
    return [
        {"output": m.output_repo, "method": m.method, "languages": ", ".join(m.languages), "error": m.error or ""}
        for m in sorted(view.merges, key=lambda m: m.output_repo)
        if m.status == "failed"
    ]


_SHORT_METRICS = {"bits_per_byte": "bpb", "acc": "acc", "acc_norm": "acc_n", "byte_perplexity": "byte ppl"}


def short_header(column: str) -> str:
    """A short column header: `flores_ben_Beng bits_per_byte (--limit 20)` -> `bpb ben_Beng flores*`.

    The full name stays in the CSV and in the legend under the table; `*` marks a `--limit` run.
    """
    task, _, metric = column.partition(" ")
    if not metric or "_" not in task:  # `model`, `language gain kept`: already short
        return column
    limited = _LIMIT in metric
    metric = _SHORT_METRICS.get(base_metric(metric), base_metric(metric))
    suite, _, language = task.partition("_")
    return f"{metric} {language or suite} {suite}{'*' if limited else ''}".strip()


@dataclass(frozen=True)
class BoardState:
    """What the Leaderboard tab shows for one set of controls; every control value is one of its choices."""

    rows: list[dict[str, Any]]
    sort_choices: list[str]
    sort_by: str | None
    method_choices: list[str]
    method: str | None
    empty_text: str


def board_state(
    models: list[ModelScores],
    *,
    language: str | None,
    method: str | None,
    search: str,
    sort_by: str | None,
    endpoint: str | None,
) -> BoardState:
    """The board for these controls, never an invalid combination: a sort column or method that is
    not offered any more is dropped (a search with no match keeps every sort column)."""
    methods = sorted({m.method for m in models if m.role == "merge" and m.method})
    method = method if method in methods else None
    every = leaderboard_rows(models, language=language, method=method, endpoint=endpoint)
    columns = [c for c in (every[0] if every else {}) if c != "link"]
    sort_by = sort_by if sort_by in columns else None
    rows = leaderboard_rows(models, language=language, method=method, search=search, sort_by=sort_by,
                            endpoint=endpoint)  # fmt: skip
    if rows:
        empty = ""
    elif search.strip():
        empty = f"no match for {search.strip()!r}"
    else:
        empty = "no model yet"
    return BoardState(rows=rows, sort_choices=columns, sort_by=sort_by, method_choices=methods, method=method,
                      empty_text=empty)  # fmt: skip


def _relevant(model: ModelScores, language: str | None) -> bool:
    # SFT checkpoints are English: they belong to every language's board.
    return language is None or model.role == "sft" or language in model.languages


def metric_columns(models: Iterable[ModelScores], language: str | None = None) -> list[str]:
    """`task metric` column names present among the models, the language's tasks first."""
    names = {f"{s.task} {s.metric}" for m in models for s in m.scores}
    if language:
        names = {n for n in names if n.split(" ", 1)[0].endswith((language, "eng_Latn"))}
    return sorted(names, key=lambda n: (not (language and language in n), n))


def leaderboard_rows(
    models: list[ModelScores],
    *,
    language: str | None = None,
    method: str | None = None,
    search: str = "",
    sort_by: str | None = None,
    endpoint: str | None = None,
) -> list[dict[str, Any]]:
    """The leaderboard: one row per model, one column per `task metric`.

    Args:
        models: from `collect_scores`.
        language: keep models of this language (SFT checkpoints always stay).
        method: keep merges of this method (CT and SFT rows stay as the reference points).
        search: keep models whose repo id contains this text (case-insensitive).
        sort_by: a column to sort by (bits per byte ascending, everything else descending);
            None: by role, then repo.
        endpoint: the Hub URL, for the `link` column.

    Returns:
        Rows as dicts: model, role, languages, method, revision, link, gain columns, metrics.
    """
    search = search.strip()
    chosen = [
        m
        for m in models
        if _relevant(m, language)
        and (not method or m.role != "merge" or m.method == method)
        and search.lower() in m.repo.lower()
    ]
    columns = metric_columns(chosen, language)
    kept = gains_kept(models)
    rows = []
    for model in chosen:
        row: dict[str, Any] = {
            "model": model.repo,
            "role": model.role,
            "languages": ", ".join(model.languages),
            "method": model.method or "",
            "revision": (model.revision or "")[:7],
            "link": repo_link(endpoint, model.repo) if endpoint else model.repo,
        }
        gain = kept.get(model.repo)
        row["language gain kept"] = _rounded(gain.language if gain else None)
        row["task gain kept"] = _rounded(gain.task if gain else None)
        for column in columns:
            task, metric = column.split(" ", 1)
            row[column] = _rounded(model.value(task, metric))
        rows.append(row)
    order = {"merge": 0, "ct": 1, "sft": 2, "ct_sft": 3}
    rows.sort(key=lambda r: (order.get(r["role"], 3), r["model"]))
    if sort_by and rows and sort_by in rows[0]:
        ascending = "bits_per_byte" in sort_by or sort_by in ("model", "role", "languages", "method")
        present = [r for r in rows if r[sort_by] is not None]
        missing = [r for r in rows if r[sort_by] is None]
        present.sort(key=lambda r: r[sort_by], reverse=not ascending)
        rows = present + missing
    return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


@dataclass(frozen=True)
class GainKept:
    """The lab's two fractions for one merge (None where an input's number is missing)."""

    merge: str
    language: float | None
    task: float | None


def _fraction(merged: float | None, start: float | None, goal: float | None) -> float | None:
    """How far `merged` moved from `start` towards `goal` (1.0: reached it)."""
    if merged is None or start is None or goal is None or goal == start:
        return None
    return (merged - start) / (goal - start)


def _same_run(merge: ModelScores, start: ModelScores, goal: ModelScores, task: str, metric: str) -> float | None:
    """The fraction on one task, from numbers under one label: the full metric, else one `--limit` run
    (all three partial numbers of the same limit; a full number is never mixed with a partial one)."""
    labels = [metric] + sorted({s.metric for s in merge.scores if s.task == task and base_metric(s.metric) == metric})
    for label in dict.fromkeys(labels):
        values = (merge.value(task, label), start.value(task, label), goal.value(task, label))
        if None not in values:
            return _fraction(*values)
    return None


def gains_kept(models: list[ModelScores]) -> dict[str, GainKept]:
    """Language and task gain kept per merge repo (see the module docstring)."""
    by_repo = {m.repo: m for m in models if m.role in ("ct", "sft")}
    out = {}
    for merge in (m for m in models if m.role == "merge"):
        ct, sft = by_repo.get(merge.ct or ""), by_repo.get(merge.sft or "")
        if ct is None or sft is None:
            continue
        fractions = [_same_run(merge, sft, ct, f"flores_{language}", "bits_per_byte") for language in merge.languages]
        known = [f for f in fractions if f is not None]
        language_kept = sum(known) / len(known) if known else None
        task_kept = _same_run(merge, ct, sft, *TASK_METRIC)
        out[merge.repo] = GainKept(merge=merge.repo, language=language_kept, task=task_kept)
    return out


def bar_rows(models: list[ModelScores], language: str) -> list[dict[str, Any]]:
    """Grouped bars for one language: per metric, the CT, SFT, CT-then-SFT and merged values side by side.

    One row per (metric, model): `metric`, `bar` (the x axis: metric · CT / SFT / CT→SFT / merged <name>),
    `model` (CT, SFT, CT→SFT or merged: the colour), `repo`, `value`. A CT, SFT or CT-then-SFT shared
    by several merges is shown once per metric. The CT-then-SFT bar is the catalog's `ct_sft` entry
    trained from the merge's CT (the baseline merging is compared with), where there is one.
    """
    by_repo = {m.repo: m for m in models if m.role != "ct_sft"}
    baseline = {(m.ct, m.languages[0]): m for m in models if m.role == "ct_sft" and m.languages}
    order = ("CT", "SFT", "CT→SFT", "merged")
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for merge in sorted((m for m in models if m.role == "merge" and language in m.languages), key=lambda m: m.repo):
        trio = [("CT", by_repo.get(merge.ct or "")), ("SFT", by_repo.get(merge.sft or "")),
                ("CT→SFT", baseline.get((merge.ct, language))), ("merged", merge)]  # fmt: skip
        for column in metric_columns([merge], language):
            task, metric = column.split(" ", 1)
            for label, model in trio:
                value = model.value(task, metric) if model else None
                if value is None or model is None or (column, model.repo) in seen:
                    continue
                seen.add((column, model.repo))
                name = f"{label} {model.repo.split('/')[-1]}" if label == "merged" else label
                rows.append(
                    {"metric": column, "bar": f"{column} · {name}", "model": label, "repo": model.repo,
                     "value": round(value, 4)}
                )  # fmt: skip
    rows.sort(key=lambda r: (r["metric"], order.index(r["model"]), r["repo"]))
    # Byte-level bits (≈ 1-9) and accuracies (0-1) on one axis would hide the accuracies: each metric
    # is also given relative to its largest bar, so every metric spans the same height.
    largest: dict[str, float] = {}
    for row in rows:
        largest[row["metric"]] = max(largest.get(row["metric"], 0.0), abs(row["value"]))
    for row in rows:
        row["relative"] = round(row["value"] / largest[row["metric"]], 4) if largest[row["metric"]] else 0.0
    return rows


def scatter_rows(models: list[ModelScores], language: str | None = None) -> list[dict[str, Any]]:
    """One point per merge with both fractions known: `language gain kept`, `task gain kept`, method, repo."""
    rows = []
    for repo, gain in sorted(gains_kept(models).items()):
        model = next(m for m in models if m.repo == repo)
        if gain.language is None or gain.task is None or (language and language not in model.languages):
            continue
        rows.append(
            {"language gain kept": round(gain.language, 4), "task gain kept": round(gain.task, 4),
             "method": model.method or "", "repo": repo}
        )  # fmt: skip
    return rows
