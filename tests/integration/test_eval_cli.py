"""`registry eval` through the CLI on tiny checkpoints and the real data (small --limit)."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.evaluate.records import load_record
from registry.evaluate.sources import hash_model_files

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "recipes" / "eval" / "ben_Beng.yaml"
LIMIT = 2


def _eval(
    model: Path,
    out: Path,
    data: Path,
    cache: Path,
    *extra: str,
    subcommand: bool = False,
    suite: Path = SUITE,
    quiet: bool = True,
) -> object:
    args = [
        "eval",
        *(["run"] if subcommand else []),
        str(model),
        "--suite",
        str(suite),
        "--data-dir",
        str(data),
        "--limit",
        str(LIMIT),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    ]
    return CliRunner().invoke(app, [*(["-q"] if quiet else []), *args])


@pytest.fixture
def mini_suite(tmp_path: Path) -> Path:
    """Two of the ben_Beng suite's tasks, with the same shots (so cache entries are shared)."""
    path = tmp_path / "mini" / "ben_Beng.yaml"
    path.parent.mkdir()
    path.write_text(
        "language: ben_Beng\ntasks:\n  - {task: sib200_ben_Beng, num_fewshot: 5}\n  - {task: flores_ben_Beng}\n"
    )
    return path


def _numbers(path: Path) -> dict[str, dict[str, float]]:
    return {t.task: {k: m.value for k, m in t.metrics.items()} for t in load_record(path).tasks}


@pytest.fixture(scope="module")
def base_run(shared_data: Path, tiny_family, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One evaluation of the tiny base on the ben_Beng suite (results file, cache dir)."""
    root = tmp_path_factory.mktemp("eval_cli")
    result = _eval(tiny_family.base, root / "base.json", shared_data, root / "cache")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("base.json")
    # -q: no progress bars (lm-eval's and transformers' included) and no table, only the limit warning
    assert result.stderr.strip().startswith("Limited run:"), result.stderr
    return root / "base.json", root / "cache"


def test_results_record_schema(base_run: tuple[Path, Path], tiny_family) -> None:
    record = load_record(base_run[0])
    assert [t.task for t in record.tasks] == [
        "sib200_ben_Beng",
        "flores_ben_Beng",
        "mgsm_ben_Beng",
        "sib200_eng_Latn",
        "flores_eng_Latn",
    ]
    assert record.model.weights_hash == hash_model_files(tiny_family.base)
    assert record.model.local_path == str(tiny_family.base.resolve())
    assert record.lm_eval_version == version("lm_eval") and record.device == "cpu" and record.language == "ben_Beng"
    assert record.limit == LIMIT and record.limited
    for task in record.tasks:
        assert (task.n_samples, task.limit, task.cached, task.device) == (LIMIT, LIMIT, False, "cpu")
        assert len(task.task_hash) == 64 and task.duration_s > 0
    by_task = {t.task: t for t in record.tasks}
    assert by_task["sib200_ben_Beng"].num_fewshot == 5 and by_task["sib200_ben_Beng"].n_total == 204
    assert by_task["mgsm_ben_Beng"].num_fewshot == 8 and by_task["mgsm_ben_Beng"].n_total == 250
    assert by_task["flores_ben_Beng"].n_total == 1012
    assert set(by_task["sib200_ben_Beng"].metrics) == {"acc", "acc_norm"}
    assert set(by_task["flores_ben_Beng"].metrics) == {"bits_per_byte", "byte_perplexity"}
    assert set(by_task["mgsm_ben_Beng"].metrics) == {"exact_match"}
    assert 0.0 <= by_task["sib200_ben_Beng"].metrics["acc"].value <= 1.0
    bpb = by_task["flores_ben_Beng"].metrics["bits_per_byte"].value
    assert 1.0 < bpb < 10.0  # a random byte-level model: ~log2(vocab) bits per byte token


def test_cache_hit_and_determinism(
    base_run: tuple[Path, Path], shared_data: Path, tiny_family, tmp_path: Path, mini_suite: Path
) -> None:
    first, cache = base_run
    tasks = ("--tasks-dir", str(ROOT / "recipes" / "tasks"))
    again = _eval(
        tiny_family.base,
        tmp_path / "cached.json",
        shared_data,
        cache,
        "--task",
        "sib200_ben_Beng",
        "--task",
        "flores_ben_Beng",
        quiet=False,
    )
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == str(tmp_path / "cached.json")  # stdout: the result only
    assert "Evaluation comparison" in again.stderr and "flores_ben_Beng bits_per_byte" in again.stderr
    assert all(t.cached and t.device == "cpu" for t in load_record(tmp_path / "cached.json").tasks)
    expected = {k: v for k, v in _numbers(first).items() if k in ("sib200_ben_Beng", "flores_ben_Beng")}
    assert _numbers(tmp_path / "cached.json") == expected
    # computed afresh (no cache), through the explicit `run` subcommand: the same numbers
    fresh = _eval(
        tiny_family.base,
        tmp_path / "fresh.json",
        shared_data,
        cache,
        *tasks,
        "--no-cache",
        subcommand=True,
        suite=mini_suite,
    )
    assert fresh.exit_code == 0, fresh.output
    assert not any(t.cached for t in load_record(tmp_path / "fresh.json").tasks)
    assert _numbers(tmp_path / "fresh.json") == expected


def test_compare_two_models(
    base_run: tuple[Path, Path], shared_data: Path, tiny_family, tmp_path: Path, mini_suite: Path
) -> None:
    tasks = ("--tasks-dir", str(ROOT / "recipes" / "tasks"))
    result = _eval(tiny_family.ct, tmp_path / "ct.json", shared_data, base_run[1], *tasks, suite=mini_suite)
    assert result.exit_code == 0, result.output
    base, ct = _numbers(base_run[0]), _numbers(tmp_path / "ct.json")
    assert base["flores_ben_Beng"]["bits_per_byte"] != ct["flores_ben_Beng"]["bits_per_byte"]
    out = CliRunner().invoke(
        app,
        [
            "eval",
            "compare",
            str(base_run[0]),
            str(tmp_path / "ct.json"),
            "--markdown",
            "--label",
            "base",
            "--label",
            "ct",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "| metric | base †limited | ct †limited |"
    row = next(line for line in lines if line.startswith("| flores_ben_Beng bits_per_byte ↓"))
    delta = ct["flores_ben_Beng"]["bits_per_byte"] - base["flores_ben_Beng"]["bits_per_byte"]
    assert f"({delta:+.4f})†" in row
    mgsm = next(line for line in lines if line.startswith("| mgsm_ben_Beng exact_match"))
    assert mgsm.endswith("| — |")  # the CT run did not evaluate MGSM
    assert f"{LIMIT} of 1012" in out.stdout and "not comparable" in out.stdout
    rich_out = CliRunner().invoke(app, ["eval", "compare", str(base_run[0]), str(tmp_path / "ct.json")])
    assert rich_out.exit_code == 0 and "flores_ben_Beng bits_per_byte" in rich_out.stdout


def test_help_explains_both_forms() -> None:
    out = CliRunner().invoke(app, ["eval", "--help"])
    assert out.exit_code == 0
    assert "registry eval MODEL --suite" in out.stdout and "registry eval compare" in out.stdout
    run_help = CliRunner().invoke(app, ["eval", "run", "--help"])
    assert "--data-dir" in run_help.stdout and "--limit" in run_help.stdout
    assert "owner/name[@revision]" in run_help.stdout  # not eaten as rich markup


def test_errors_are_one_line_and_actionable(tiny_family, tmp_path: Path) -> None:
    missing_data = _eval(tiny_family.base, tmp_path / "x.json", tmp_path, tmp_path / "c")
    assert missing_data.exit_code == 1
    assert "Error: Task sib200_ben_Beng needs" in missing_data.stderr and "--data-dir" in missing_data.stderr
    (tmp_path / "empty").mkdir()
    no_weights = _eval(tmp_path / "empty", tmp_path / "x.json", tmp_path, tmp_path / "c")
    assert no_weights.exit_code == 1 and "No weights" in no_weights.stderr
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"hello": 1}))
    out = CliRunner().invoke(app, ["eval", "compare", str(bad_json)])
    assert out.exit_code == 1 and "not a `registry eval` results file" in out.stderr
    not_in_suite = _eval(tiny_family.base, tmp_path / "x.json", tmp_path, tmp_path / "c", "--task", "mgsm_tam_Taml")
    assert not_in_suite.exit_code == 1 and "not in the ben_Beng suite; choose from:" in not_in_suite.stderr
    usage = CliRunner().invoke(app, ["eval", str(tiny_family.base), "--suite", str(SUITE), "--device", "tpu"])
    assert usage.exit_code == 2


def test_tasks_with_their_own_dataset_need_no_data_repo(tiny_family, shared_data: Path, tmp_path: Path) -> None:
    """A suite of tasks that name their own dataset (like milic) runs without --data-dir and
    without touching --data-repo (here an unreachable hub)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "sib200_own.yaml").write_text(
        f"include: {ROOT / 'recipes' / 'tasks' / '_sib200.yaml'}\ntask: sib200_own\ndataset_kwargs:\n  data_files:\n"
        f"    train: {shared_data / 'sib200/eng_Latn/train.jsonl'}\n    test: {shared_data / 'sib200/eng_Latn/test.jsonl'}\n"
    )
    suite = tmp_path / "eval" / "eng_Latn.yaml"
    suite.parent.mkdir()
    suite.write_text("language: eng_Latn\ntasks:\n  - {task: sib200_own, num_fewshot: 0}\n")
    out = tmp_path / "own.json"
    result = CliRunner().invoke(
        app,
        [
            "-q",
            "eval",
            str(tiny_family.base),
            "--suite",
            str(suite),
            "--tasks-dir",
            str(tasks),
            "--data-repo",
            "nobody/nothing",
            "--limit",
            "2",
            "--device",
            "cpu",
            "--output",
            str(out),
            "--no-cache",
        ],
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.exit_code == 0, result.output
    record = load_record(out)
    assert record.data_source == "datasets named by the task configs" and record.tasks[0].n_samples == 2


def test_eval_says_how_many_documents_each_task_has_and_how_long_the_rest_will_take(
    shared_data: Path, tiny_family, mini_suite: Path, tmp_path: Path
) -> None:
    result = _eval(
        tiny_family.sft, tmp_path / "sft.json", shared_data, tmp_path / "c", "--tasks-dir", str(ROOT / "recipes" / "tasks"),
        suite=mini_suite, quiet=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())  # log lines may wrap at the console width
    assert f"sib200_ben_Beng: 5-shot, {LIMIT} documents (--limit {LIMIT})" in err, err
    assert f"flores_ben_Beng: 0-shot, {LIMIT} documents" in err, err
    assert "About" in err and "s left for 2 more documents" in err, err  # after the first task, for the rest
    assert "\r" not in result.stderr  # no bars when stderr is not a terminal
