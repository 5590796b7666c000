"""Every task config in recipes/tasks and every suite in recipes/eval loads and is usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from registry.errors import DataNotFoundError, EvaluationError
from registry.evaluate.suite import load_suite
from registry.evaluate.tasks import FunctionRef, find_task, list_tasks, load_task, task_hash

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "recipes" / "tasks"
SUITES = sorted((ROOT / "recipes" / "eval").glob("*.yaml"))
LANGS = ("ben_Beng", "tam_Taml", "tel_Telu", "ory_Orya", "bod_Tibt", "uig_Arab", "khk_Cyrl", "eng_Latn")


def test_expected_tasks_exist() -> None:
    names = set(list_tasks(TASKS))
    for lang in LANGS:
        assert {f"sib200_{lang}", f"flores_{lang}"} <= names
    assert {"mgsm_ben_Beng", "mgsm_tel_Telu", "mgsm_eng_Latn", "belebele_eng_Latn"} <= names
    for lang in ("bo", "ug", "mn"):
        assert {f"milic_topic_{lang}", f"milic_reading_{lang}", f"milic_response_{lang}", f"milic_math_{lang}"} <= names
    assert {p.stem for p in SUITES} == set(LANGS)


@pytest.mark.parametrize("name", list_tasks(TASKS))
def test_task_config_is_valid_for_lm_eval(name: str) -> None:
    from lm_eval.config.task import TaskConfig

    spec = load_task(TASKS / f"{name}.yaml")
    for value in spec.config.values():
        if isinstance(value, FunctionRef):
            assert callable(value.resolve())
    config = spec.to_lm_eval(data_dir=Path("/nonexistent")) if not spec.uses_local_data() else None
    if config is not None:  # Hub-served (milic): lm-eval's schema accepts it
        assert TaskConfig(**config).task == name
    assert len(task_hash(spec, data_dir=None)) == 64


@pytest.mark.parametrize("suite_path", SUITES, ids=lambda p: p.stem)
def test_suite_is_valid(suite_path: Path) -> None:
    suite = load_suite(suite_path)
    assert suite.language == suite_path.stem
    for item in suite.tasks:
        spec = find_task(item.task, tasks_dir=TASKS)
        assert spec.uses_local_data(), f"{item.task}: default suites use local/seeded data only"
    assert any(t.task.endswith(suite.language) for t in suite.tasks)


def test_local_tasks_build_in_lm_eval(shared_data: Path) -> None:
    """lm-eval builds every local-data task (loads its documents) from our configs."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False)
    for name in list_tasks(TASKS):
        spec = find_task(name, tasks_dir=TASKS)
        if not spec.uses_local_data():
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
    with pytest.raises(EvaluationError, match="Unknown task 'sib200_xxx_Yyyy'.*available: .*sib200_ben_Beng"):
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


# The record shape the milic configs assume (UNVERIFIED against pkupie/milic-eval; see _milic_mc.yaml).
_MILIC_MC_RECORD = {"context": "CTX-TEXT", "question": "Q-TEXT", "choices": ["alpha", "beta", "gamma"], "answer": 1}
_MILIC_MATH_RECORD = {"question": "Q-TEXT: 2 + 3", "answer_number": 5}


@pytest.mark.parametrize("name", [n for n in list_tasks(TASKS) if n.startswith("milic_")])
def test_milic_config_is_flagged_and_builds_on_the_assumed_fields(name: str, tmp_path: Path) -> None:
    """Each milic task: flagged as unverified, Hub-served, and usable by lm-eval on a record with
    exactly the documented fields (a template naming any other field would render it empty)."""
    from lm_eval.tasks import TaskManager

    from registry.evaluate.mgsm import process_results

    spec = find_task(name, tasks_dir=TASKS)
    template = TASKS / str(yaml.safe_load(spec.path.read_text("utf-8"))["include"])
    assert spec.path.read_text("utf-8").startswith("# UNVERIFIED") and "UNVERIFIED" in template.read_text("utf-8")
    assert spec.config["dataset_path"] == "pkupie/milic-eval" and not spec.uses_local_data()
    assert spec.config["dataset_name"].endswith(name.rpartition("_")[2])  # the subset of this language
    math = name.startswith("milic_math_")
    record = _MILIC_MATH_RECORD if math else _MILIC_MC_RECORD
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    config = {k: v for k, v in spec.to_lm_eval(data_dir=tmp_path).items() if k != "dataset_name"}
    config |= {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}}
    task = TaskManager(include_defaults=False).load([config])["tasks"][name]
    (doc,) = list(task.test_docs())
    text = task.doc_to_text(doc)
    if math:
        assert text == "Question: Q-TEXT: 2 + 3\nStep-by-Step Answer:"
        assert process_results(doc, ["2 + 3 = 5. The answer is 5."]) == {"exact_match": 1}
        return
    assert "CTX-TEXT" in text and ("Q-TEXT" in text) == name.startswith("milic_reading_")
    assert task.doc_to_choice(doc) == ["alpha", "beta", "gamma"] and task.doc_to_target(doc) == 1
