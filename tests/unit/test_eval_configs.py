"""Every task config in recipes/tasks and every suite in recipes/eval loads and is usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import DataNotFoundError, EvaluationError
from registry.evaluate.suite import load_suite
from registry.evaluate.tasks import FunctionRef, find_task, list_tasks, load_task, task_hash

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "recipes" / "tasks"
SUITES = sorted((ROOT / "recipes" / "eval").glob("*.yaml"))
LANGS = ("ben_Beng", "tam_Taml", "tel_Telu", "ory_Orya", "bod_Tibt", "uig_Arab", "khk_Cyrl", "eng_Latn")
SUITE_LANGS = (*LANGS, "mon_Mong")


def test_expected_tasks_exist() -> None:
    names = set(list_tasks(TASKS))
    for lang in LANGS:
        assert {f"sib200_{lang}", f"flores_{lang}"} <= names
    assert {"mgsm_ben_Beng", "mgsm_tel_Telu", "mgsm_eng_Latn", "belebele_eng_Latn"} <= names
    for lang in ("bo", "ug", "mn"):
        assert {f"milic_topic_{lang}", f"milic_reading_{lang}", f"milic_response_{lang}", f"milic_math_{lang}"} <= names
    assert {p.stem for p in SUITES} == set(SUITE_LANGS)


@pytest.mark.parametrize("name", list_tasks(TASKS))
def test_task_config_is_valid_for_lm_eval(name: str) -> None:
    from lm_eval.config.task import TaskConfig

    spec = load_task(TASKS / f"{name}.yaml")
    for value in spec.config.values():
        if isinstance(value, FunctionRef):
            assert callable(value.resolve())
    assert spec.uses_local_data(), f"{name}: every shipped task reads files from the data directory"
    resolved = {k: (v.resolve() if isinstance(v, FunctionRef) else v) for k, v in spec.config.items()}
    assert TaskConfig(**resolved).task == name  # lm-eval's schema accepts it
    assert len(task_hash(spec, data_dir=None)) == 64


@pytest.mark.parametrize("suite_path", SUITES, ids=lambda p: p.stem)
def test_suite_is_valid(suite_path: Path) -> None:
    suite = load_suite(suite_path)
    assert suite.language == suite_path.stem
    for item in suite.tasks:
        spec = find_task(item.task, tasks_dir=TASKS)
        assert spec.uses_local_data(), f"{item.task}: default suites use local/seeded data only"
    target = {"mon_Mong": "_mn"}.get(suite.language, suite.language)
    assert any(t.task.endswith(target) for t in suite.tasks)
    # Only tasks whose data the shared data lacks (Belebele outside English, MiLiC-Eval) are optional.
    for item in suite.tasks:
        if item.optional:
            assert item.task.startswith(("belebele_", "milic_")) and item.task != "belebele_eng_Latn"


def test_local_tasks_build_in_lm_eval(shared_data: Path) -> None:
    """lm-eval builds every local-data task (loads its documents) from our configs."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False)
    for name in list_tasks(TASKS):
        spec = find_task(name, tasks_dir=TASKS)
        if not all((shared_data / rel).is_file() for rel in spec.data_files().values()):
            assert name.startswith(("belebele_", "milic_")), f"{name}: data missing from the shared data"
            continue
        loaded = manager.load([spec.to_lm_eval(data_dir=shared_data)])
        task = loaded["tasks"][name]
        docs = list(task.test_docs())
        assert docs, name
        first = docs[0]
        assert task.doc_to_text(first) is not None
        if name.startswith("sib200_"):
            assert len(docs) == 204 and task.doc_to_target(first) in task.doc_to_choice(first)
            assert len({d["category"] for d in docs[:20]}) >= 5  # --limit 20 is not one label
        if name.startswith("flores_"):
            assert len(docs) == 1012
        if name.startswith("mgsm_"):
            assert len(docs) == 250 and len(list(task.fewshot_docs())) == 8


def test_task_hash_depends_on_data_not_location(shared_data: Path, tmp_path: Path) -> None:
    spec = find_task("flores_eng_Latn", tasks_dir=TASKS)
    copy = tmp_path / "flores200" / "devtest"
    copy.mkdir(parents=True)
    src = (shared_data / "flores200/devtest/eng_Latn.jsonl").read_bytes()
    (copy / "eng_Latn.jsonl").write_bytes(src)
    assert task_hash(spec, data_dir=shared_data) == task_hash(spec, data_dir=tmp_path)
    (copy / "eng_Latn.jsonl").write_bytes(src.replace(b"a", b"b", 1))
    assert task_hash(spec, data_dir=shared_data) != task_hash(spec, data_dir=tmp_path)


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="Unknown task 'sib200_xxx_Yyyy'.*ours: .*sib200_ben_Beng"):
        find_task("sib200_xxx_Yyyy", tasks_dir=TASKS)
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        find_task("sib200_ben_Beng", tasks_dir=TASKS).to_lm_eval(data_dir=tmp_path)
    bad = tmp_path / "evil.yaml"
    bad.write_text(
        "task: evil\noutput_type: generate_until\ndoc_to_text: x\ndoc_to_target: y\ntest_split: t\n"
        "process_results: !function os.system\n"
    )
    with pytest.raises(EvaluationError, match="outside registry.evaluate"):
        load_task(bad)
    suite = tmp_path / "s.yaml"
    suite.write_text("language: bengali\ntasks: [{task: a}, {task: a}]\n")
    with pytest.raises(EvaluationError, match="language.*FLORES-200 code.*tasks.*listed twice"):
        load_suite(suite)
    suite.write_text("language: ben_Beng\ntasks: [{task: a, shots: 3}]\n")
    with pytest.raises(EvaluationError, match="shots"):
        load_suite(suite)
    for task_file in ("_sib200.yaml", "sib200_ben_Beng.yaml"):  # a task config passed as --suite
        with pytest.raises(EvaluationError, match="is a task config, not a suite; pass a suite such as recipes/eval"):
            load_suite(TASKS / task_file)


def test_select_tasks() -> None:
    from registry.evaluate.suite import select_tasks

    suite = load_suite(ROOT / "recipes" / "eval" / "ben_Beng.yaml")
    assert select_tasks(suite, []) == suite
    picked = select_tasks(suite, ["flores_eng_Latn", "sib200_ben_Beng"])
    assert [t.task for t in picked.tasks] == ["sib200_ben_Beng", "flores_eng_Latn"]  # suite order
    assert picked.tasks[0].num_fewshot == 5
    with pytest.raises(
        EvaluationError, match="mgsm_tam_Taml are not in the ben_Beng suite; choose from: sib200_ben_Beng"
    ):
        select_tasks(suite, ["mgsm_tam_Taml"])


@pytest.mark.parametrize(
    ("lang", "q_label", "a_label"), [("ben_Beng", "প্রশ্ন:", "ধাপে ধাপে উত্তর:"), ("tel_Telu", "ప్రశ్న:", "దశలవారీగా సమాధానం:")]
)
def test_mgsm_prompt_is_eight_native_exemplars_then_the_question(
    shared_data: Path, lang: str, q_label: str, a_label: str
) -> None:
    from lm_eval.tasks import TaskManager

    config = find_task(f"mgsm_{lang}", tasks_dir=TASKS).to_lm_eval(data_dir=shared_data)
    task = TaskManager(include_defaults=False).load([config])["tasks"][f"mgsm_{lang}"]
    task.set_fewshot_seed(1234)
    doc = next(iter(task.test_docs()))
    context = task.fewshot_context(doc, num_fewshot=8)
    exemplars = [
        json.loads(line) for line in (shared_data / f"mgsm/exemplars/{lang}.jsonl").read_text("utf-8").splitlines()
    ]
    assert context.count(q_label) == 9 and context.count(a_label) == 9
    assert context.startswith(exemplars[0]["q"])  # published order, first exemplar first
    positions = [context.index(ex["a"].partition(":")[2].strip()) for ex in exemplars]
    assert positions == sorted(positions)
    assert context.endswith(f"{q_label} {doc['prompt'].partition(' ')[2]}") and context.endswith(a_label)
    assert (
        config["generation_kwargs"]["until"] == ["\n\n", q_label] and config["generation_kwargs"]["do_sample"] is False
    )
