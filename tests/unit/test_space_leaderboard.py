"""The Space's catalog view and leaderboard: rows, filters, the lab's gain-kept fractions, plot data."""

from __future__ import annotations

import pytest

from registry.catalog.entries import (
    CtEntry,
    EvalResult,
    MergeEntry,
    MergeInput,
    ModelRef,
    SftEntry,
    ct_entry_id,
    merge_entry_id,
    sft_entry_id,
)
from space.catalog_view import CatalogView
from space.leaderboard import (
    ModelScores,
    Score,
    bar_rows,
    collect_scores,
    gains_kept,
    leaderboard_rows,
    scatter_rows,
)

SHA = "a" * 40
BASE = ModelRef(repo="lab/base", revision="b" * 40)


def _ct(repo: str, language: str) -> CtEntry:
    return CtEntry(
        id=ct_entry_id(repo=repo, revision="main", language=language), repo=repo, revision="main", base=BASE,
        language=language, verified=False,
    )  # fmt: skip


def _sft(repo: str) -> SftEntry:
    return SftEntry(id=sft_entry_id(repo=repo, revision="main"), repo=repo, revision="main", base=BASE, verified=False)


def _merge(out: str, method: str, ct: CtEntry, sft: SftEntry, *, status: str = "evaluated", results=()) -> MergeEntry:  # noqa: ANN001
    recipe_hash = (method.encode().hex() * 64)[:64]
    return MergeEntry(
        id=merge_entry_id(output_repo=out, recipe_hash=recipe_hash), method=method, recipe_hash=recipe_hash,
        inputs=(MergeInput(role="ct", repo=ct.repo, revision=SHA), MergeInput(role="sft", repo=sft.repo, revision=SHA)),
        output_repo=out, output_revision=SHA if status in ("merged", "evaluated") else None, status=status,  # type: ignore[arg-type]
        languages=(ct.language,), results=tuple(results),
    )  # fmt: skip


@pytest.fixture
def view() -> CatalogView:
    ct_ben, ct_tam, sft = _ct("lab/ct-ben", "ben_Beng"), _ct("lab/ct-tam", "tam_Taml"), _sft("lab/sft")
    return CatalogView(
        repo_id="lab/mergeling-registry",
        cts=(ct_ben, ct_tam),
        sfts=(sft,),
        merges=(
            _merge("lab/ben-ties", "ties", ct_ben, sft,
                   results=[EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=3.0)]),
            _merge("lab/ben-linear", "linear", ct_ben, sft),
            _merge("lab/tam-running", "ties_sv", ct_tam, sft, status="running"),
        ),
    )  # fmt: skip


def _cards(repo: str, revision: str | None) -> list[Score]:
    # What the models' cards say (model-index), as a reader over the Hub would return it.
    table = {
        "lab/ct-ben": [Score("flores_ben_Beng", "bits_per_byte", 1.3), Score("sib200_eng_Latn", "acc", 0.2)],
        "lab/sft": [Score("flores_ben_Beng", "bits_per_byte", 7.0), Score("sib200_eng_Latn", "acc", 0.38)],
        "lab/ben-ties": [Score("sib200_eng_Latn", "acc", 0.34), Score("flores_ben_Beng", "bits_per_byte", 9.9)],
        "lab/ben-linear": [Score("flores_ben_Beng", "bits_per_byte", 2.0), Score("sib200_eng_Latn", "acc", 0.29)],
    }
    return table.get(repo, [])


def test_catalog_view_languages_trios_and_lineage(view: CatalogView) -> None:
    assert view.languages() == ["ben_Beng", "tam_Taml"]
    trios = view.trios("ben_Beng")
    assert [t.merged for t in trios] == [f"lab/ben-linear@{SHA}", f"lab/ben-ties@{SHA}"]
    assert trios[0].ct == f"lab/ct-ben@{SHA}" and trios[0].sft == f"lab/sft@{SHA}"
    assert view.trios("tam_Taml") == []  # still running: no weights to try
    rows = view.registry_rows("ben_Beng")
    assert [r["kind"] for r in rows] == ["ct", "sft", "merge (linear, evaluated)", "merge (ties, evaluated)"]
    assert rows[0]["lineage"] == "lab/base → lab/ct-ben"
    assert rows[3]["lineage"] == "ct lab/ct-ben + sft lab/sft → lab/ben-ties" and rows[3]["revision"] == "aaaaaaa"
    assert view.find_checkpoint("lab/sft") is not None and view.find_checkpoint("lab/nope") is None


def test_entry_results_win_over_the_card(view: CatalogView) -> None:
    scores = {m.repo: m for m in collect_scores(view, _cards)}
    assert scores["lab/ben-ties"].value("flores_ben_Beng", "bits_per_byte") == 3.0  # entry, not the card's 9.9
    assert scores["lab/ben-ties"].value("sib200_eng_Latn", "acc") == 0.34  # filled in from the card


def test_gain_kept_fractions_as_in_the_lab(view: CatalogView) -> None:
    kept = gains_kept(collect_scores(view, _cards))
    assert kept["lab/ben-ties"].language == pytest.approx((7.0 - 3.0) / (7.0 - 1.3))
    assert kept["lab/ben-ties"].task == pytest.approx((0.34 - 0.2) / (0.38 - 0.2))
    assert kept["lab/ben-linear"].task == pytest.approx(0.5)
    assert "lab/tam-running" not in kept  # still running: a job, not a model


def test_leaderboard_filters_search_and_sort(view: CatalogView) -> None:
    models = collect_scores(view, _cards)
    rows = leaderboard_rows(models, language="ben_Beng", endpoint="http://hub")
    assert [r["model"] for r in rows] == ["lab/ben-linear", "lab/ben-ties", "lab/ct-ben", "lab/sft"]
    assert rows[0]["link"] == "http://hub/api/models/lab/ben-linear"  # the embedded hub has no HTML page
    assert {"flores_ben_Beng bits_per_byte", "sib200_eng_Latn acc"} <= set(rows[0])
    only_ties = leaderboard_rows(models, language="ben_Beng", method="ties")
    assert [r["model"] for r in only_ties] == ["lab/ben-ties", "lab/ct-ben", "lab/sft"]
    assert [r["model"] for r in leaderboard_rows(models, search="LINEAR")] == ["lab/ben-linear"]
    by_bpb = leaderboard_rows(models, language="ben_Beng", sort_by="flores_ben_Beng bits_per_byte")
    assert [r["flores_ben_Beng bits_per_byte"] for r in by_bpb] == [1.3, 2.0, 3.0, 7.0]  # lower is better
    by_acc = leaderboard_rows(models, language="ben_Beng", sort_by="sib200_eng_Latn acc")
    assert [r["sib200_eng_Latn acc"] for r in by_acc] == [0.38, 0.34, 0.29, 0.2]
    tam = leaderboard_rows(models, language="tam_Taml")
    assert [r["model"] for r in tam] == ["lab/ct-tam", "lab/sft"]


def test_plot_rows(view: CatalogView) -> None:
    models = collect_scores(view, _cards)
    bars = bar_rows(models, "ben_Beng")
    bpb = [(r["bar"], r["model"], r["value"]) for r in bars if r["metric"] == "flores_ben_Beng bits_per_byte"]
    assert bpb == [
        ("flores_ben_Beng bits_per_byte · CT", "CT", 1.3),
        ("flores_ben_Beng bits_per_byte · SFT", "SFT", 7.0),
        ("flores_ben_Beng bits_per_byte · merged ben-linear", "merged", 2.0),
        ("flores_ben_Beng bits_per_byte · merged ben-ties", "merged", 3.0),
    ]
    points = scatter_rows(models, "ben_Beng")
    assert [(p["repo"], p["method"]) for p in points] == [("lab/ben-linear", "linear"), ("lab/ben-ties", "ties")]
    assert scatter_rows(models, "tam_Taml") == []


def test_ct_then_sft_is_a_row_and_a_bar_beside_its_merge(view: CatalogView) -> None:
    from registry.catalog.entries import CtSftEntry, ct_sft_entry_id

    both = CtSftEntry(
        id=ct_sft_entry_id(repo="lab/ct-sft-ben", revision="main", language="ben_Beng"), repo="lab/ct-sft-ben",
        revision="main", base=BASE, language="ben_Beng", ct=ModelRef(repo="lab/ct-ben"), verified=False,
    )  # fmt: skip
    with_baseline = CatalogView(repo_id=view.repo_id, cts=view.cts, sfts=view.sfts, merges=view.merges,
                                ct_sfts=(both,))  # fmt: skip

    def cards(repo: str, revision: str | None) -> list[Score]:
        if repo == "lab/ct-sft-ben":
            return [Score("flores_ben_Beng", "bits_per_byte", 1.9), Score("sib200_eng_Latn", "acc", 0.31)]
        return _cards(repo, revision)

    models = collect_scores(with_baseline, cards)
    rows = leaderboard_rows(models, language="ben_Beng")
    assert [r["role"] for r in rows] == ["merge", "merge", "ct", "sft", "ct_sft"]
    assert rows[-1]["flores_ben_Beng bits_per_byte"] == 1.9
    assert leaderboard_rows(models, language="tam_Taml")[-1]["role"] == "sft"  # not another language's baseline
    bpb = [(r["model"], r["value"]) for r in bar_rows(models, "ben_Beng") if r["metric"].startswith("flores")]
    assert bpb[:3] == [("CT", 1.3), ("SFT", 7.0), ("CT→SFT", 1.9)]
    assert with_baseline.languages() == ["ben_Beng", "tam_Taml"]
    lineage = [r["lineage"] for r in with_baseline.registry_rows("ben_Beng") if r["kind"] == "ct_sft"]
    assert lineage == ["lab/base → lab/ct-ben → lab/ct-sft-ben"]
    assert with_baseline.only({"lab/ct-ben"}).ct_sfts == ()  # unreadable to the visitor: left out


def test_ct_and_sft_numbers_from_their_catalog_entries() -> None:
    """The bot records the CT's and SFT's numbers on their entries: rows, gains and bars need no card."""
    ben = [EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=1.5, language="ben_Beng")]
    ct = _ct("lab/ct-ben", "ben_Beng").model_copy(
        update={"results": (*ben, EvalResult(task="sib200_eng_Latn", metric="acc", value=0.25))}
    )
    sft = _sft("lab/sft").model_copy(
        update={"results": (EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=6.5),
                            EvalResult(task="sib200_eng_Latn", metric="acc", value=0.45))}
    )  # fmt: skip
    merge = _merge("lab/ben-ties", "ties", ct, sft, results=[
        EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=2.6),
        EvalResult(task="sib200_eng_Latn", metric="acc", value=0.41),
    ])  # fmt: skip
    view = CatalogView(repo_id="lab/r", cts=(ct,), sfts=(sft,), merges=(merge,))

    def no_cards(repo: str, revision: str | None) -> list[Score]:
        return []

    models = collect_scores(view, no_cards)
    rows = {r["model"]: r for r in leaderboard_rows(models, language="ben_Beng")}
    assert rows["lab/ct-ben"]["flores_ben_Beng bits_per_byte"] == 1.5 and rows["lab/sft"]["sib200_eng_Latn acc"] == 0.45
    assert rows["lab/ben-ties"]["language gain kept"] == pytest.approx((6.5 - 2.6) / (6.5 - 1.5), abs=1e-4)
    assert rows["lab/ben-ties"]["task gain kept"] == pytest.approx((0.41 - 0.25) / (0.45 - 0.25), abs=1e-4)
    assert [r["model"] for r in bar_rows(models, "ben_Beng") if r["metric"].startswith("sib")] == [
        "CT",
        "SFT",
        "merged",
    ]
    assert len(scatter_rows(models, "ben_Beng")) == 1
    # The entry's number wins over the card's; the card's `--limit` label stays on it.
    ct_only = CatalogView(repo_id="lab/r", cts=(ct,), sfts=(), merges=())
    limited = collect_scores(ct_only, lambda r, v: [Score("flores_ben_Beng", "bits_per_byte (--limit 20)", 9.0)])
    assert [(s.metric, s.value) for s in limited[0].scores if s.task == "flores_ben_Beng"] == [
        ("bits_per_byte (--limit 20)", 1.5)
    ]


def test_a_limited_bot_run_labels_the_ct_and_sft_numbers_too() -> None:
    """The bot evaluates merge, CT and SFT in one `--limit 20` run: the merge's card says so, the
    entries record n=20; all three land in one labelled column, and the gain is computed from them."""

    def bpb(value: float) -> EvalResult:
        return EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=value, n=20)

    ct = _ct("lab/ct-ben", "ben_Beng").model_copy(update={"results": (bpb(1.5),)})
    sft = _sft("lab/sft").model_copy(update={"results": (bpb(6.5),)})
    merge = _merge("lab/ben-ties", "ties", ct, sft, results=[bpb(2.6)])
    view = CatalogView(repo_id="lab/r", cts=(ct,), sfts=(sft,), merges=(merge,))

    def cards(repo: str, revision: str | None) -> list[Score]:
        return [Score("flores_ben_Beng", "bits_per_byte (--limit 20)", 2.6)] if repo == "lab/ben-ties" else []

    models = collect_scores(view, cards)
    rows = {r["model"]: r for r in leaderboard_rows(models, language="ben_Beng")}
    column = "flores_ben_Beng bits_per_byte (--limit 20)"
    assert [rows[m][column] for m in ("lab/ct-ben", "lab/sft", "lab/ben-ties")] == [1.5, 6.5, 2.6]
    assert "flores_ben_Beng bits_per_byte" not in rows["lab/ct-ben"]  # one column, not a full-looking twin
    assert rows["lab/ben-ties"]["language gain kept"] == pytest.approx((6.5 - 2.6) / (6.5 - 1.5), abs=1e-4)


def test_limited_results_keep_their_label() -> None:
    from huggingface_hub import EvalResult as HfEvalResult

    from space.leaderboard import _card_score

    result = HfEvalResult(
        task_type="text-classification", task_name="sib200_eng_Latn (5-shot)", dataset_type="Davlan/sib200",
        dataset_name="SIB-200", metric_type="acc", metric_value=0.5, dataset_args={"limit": 50},
    )  # fmt: skip
    assert _card_score(result) == Score("sib200_eng_Latn", "acc (--limit 50)", 0.5)
    assert ModelScores(repo="x/y", revision=None, role="ct", languages=()).value("a", "b") is None


def test_one_column_per_metric_keeps_the_limit_mark() -> None:
    from space.leaderboard import one_per_metric, short_header

    entry = [Score("flores_ben_Beng", "bits_per_byte", 3.0)]
    card = [Score("flores_ben_Beng", "bits_per_byte (--limit 20)", 3.0), Score("sib200_eng_Latn", "acc", 0.3)]
    assert one_per_metric(entry, card) == [
        Score("flores_ben_Beng", "bits_per_byte (--limit 20)", 3.0),
        Score("sib200_eng_Latn", "acc", 0.3),
    ]
    assert short_header("flores_ben_Beng bits_per_byte (--limit 20)") == "bpb ben_Beng flores*"
    assert short_header("sib200_eng_Latn acc") == "acc eng_Latn sib200"
    assert short_header("model") == "model"
    assert short_header("language gain kept") == "language gain kept"


def test_failed_merges_are_jobs_not_models() -> None:
    from space.leaderboard import failed_merges

    ct, sft = _ct("lab/ct-ben", "ben_Beng"), _sft("lab/sft")
    failed = _merge("lab/ben-failed", "ties", ct, sft, status="failed")
    view = CatalogView(repo_id="lab/r", cts=(ct,), sfts=(sft,), merges=(failed,))
    assert "lab/ben-failed" not in [m.repo for m in collect_scores(view, _cards)]
    assert [f["output"] for f in failed_merges(view)] == ["lab/ben-failed"]


def test_random_control_sequences_never_reach_an_invalid_state(view: CatalogView) -> None:
    """Property-style: random language / method / search / sort sequences (as a visitor clicks and
    types) always give a board whose sort and method values are among the offered choices."""
    import random

    from space.leaderboard import board_state

    models = collect_scores(view, _cards)
    languages = [None, "ben_Beng", "tam_Taml"]
    methods = [None, "ties", "linear", "ties_sv", "nope"]
    searches = ["", "zzz", "ben", "LAB/", " ", "tam-", "é", "(", "*"]
    rng = random.Random(18)
    state: dict[str, object] = {"language": None, "method": None, "search": "", "sort_by": None}
    for _ in range(400):
        control = rng.choice(["language", "method", "search", "sort_by"])
        if control == "language":
            state["language"] = rng.choice(languages)
        elif control == "method":
            state["method"] = rng.choice(methods)
        elif control == "search":
            state["search"] = rng.choice(searches)
        else:
            offered = board_state(models, endpoint=None, **state).sort_choices  # type: ignore[arg-type]
            state["sort_by"] = rng.choice([None, "nope", *offered])
        board = board_state(models, endpoint=None, **state)  # type: ignore[arg-type]
        assert board.sort_by is None or board.sort_by in board.sort_choices
        assert board.method is None or board.method in board.method_choices
        assert bool(board.rows) != bool(board.empty_text)
        if board.rows:
            assert all(str(state["search"]).strip().lower() in r["model"].lower() for r in board.rows)
        state["sort_by"], state["method"] = board.sort_by, board.method
