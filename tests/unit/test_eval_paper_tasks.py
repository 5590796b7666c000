"""The paper's tasks beyond the shared data: target-language Belebele and MiLiC-Eval (bo, ug, mn).

Their data cannot be had offline (Belebele outside English is only on the Hub; MiLiC-Eval is gated),
so each config is built by lm-eval on a fixture in the dataset's schema (Belebele's own fields;
MiLiC-Eval in the layout registry/evaluate/milic.py documents) and scored on a known record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import DataNotFoundError, EvaluationError
from registry.evaluate.runner import plan_suite
from registry.evaluate.suite import load_suite, select_tasks
from registry.evaluate.tasks import find_task, list_tasks

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "recipes" / "tasks"
SUITES = ROOT / "recipes" / "eval"
# Every dialect lm-eval's Belebele has among Mergeling's languages (no Uyghur, no Traditional Mongolian).
BELEBELE = ("eng_Latn", "ben_Beng", "tam_Taml", "tel_Telu", "ory_Orya", "bod_Tibt", "khk_Cyrl")


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _build(name: str, data_dir: Path):  # type: ignore[no-untyped-def]
    from lm_eval.tasks import TaskManager

    config = find_task(name, tasks_dir=TASKS).to_lm_eval(data_dir=data_dir)
    return TaskManager(include_defaults=False).load([config])["tasks"][name]


def _belebele_record(i: int, lang: str) -> dict[str, object]:
    # facebook/belebele's fields (one config per dialect, split `test`).
    return {
        "link": f"https://example.org/{i}",
        "question_number": 1,
        "flores_passage": f"PASSAGE-{i}",
        "question": f" QUESTION-{i} ",
        "mc_answer1": "one",
        "mc_answer2": "two",
        "mc_answer3": "three",
        "mc_answer4": "four",
        "correct_answer_num": str(i % 4 + 1),
        "dialect": lang,
        "ds": "2023-05-03",
    }


def test_belebele_has_a_task_for_every_dialect_it_covers() -> None:
    names = set(list_tasks(TASKS))
    assert {f"belebele_{lang}" for lang in BELEBELE} <= names
    assert "belebele_uig_Arab" not in names and "belebele_mon_Mong" not in names  # Belebele has neither


@pytest.mark.parametrize("lang", BELEBELE)
def test_belebele_builds_on_a_fixture_in_its_schema(lang: str, tmp_path: Path) -> None:
    _write(tmp_path / "belebele" / f"{lang}.jsonl", [_belebele_record(i, lang) for i in range(4)])
    task = _build(f"belebele_{lang}", tmp_path)
    docs = sorted(task.test_docs(), key=lambda d: d["flores_passage"])
    assert len(docs) == 4
    assert task.doc_to_text(docs[2]) == "P: PASSAGE-2\nQ: QUESTION-2\nA: one\nB: two\nC: three\nD: four\nAnswer:"
    assert task.doc_to_choice(docs[2]) == ["A", "B", "C", "D"]
    assert [task.doc_to_target(d) for d in docs] == [0, 1, 2, 3]


def test_belebele_is_the_same_prompt_as_lm_evals_own(tmp_path: Path) -> None:
    """Our file-based Belebele asks exactly what lm-eval's `belebele_ben_Beng` (Hub-based) asks."""
    import yaml
    from lm_eval.tasks import TaskManager

    theirs = TaskManager().task_index["belebele_ben_Beng"].yaml_path
    template = yaml.safe_load((Path(str(theirs)).parent / "_default_template_yaml").read_text())
    ours = find_task("belebele_ben_Beng", tasks_dir=TASKS).config
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type"):
        assert ours[key] == template[key], key


MILIC = {
    "text_classification": [
        {"text": "TEXT-A", "label": "sports"},
        {"text": "TEXT-B", "label": "culture"},
        {"text": "TEXT-C", "label": "economy"},
    ],
    "reading_comprehension": [
        {"passage": "PASSAGE", "question": "QUESTION", "options": ["w", "x", "y", "z"], "answer": "C"},
    ],
    "response_selection": [{"context": "QUERY", "options": ["r1", "r2", "r3"], "answer": 1}],
    "math_reasoning": [{"question": "2 + 3 = ?", "answer": "5"}],
}


@pytest.mark.parametrize("lang", ["bo", "ug", "mn"])
def test_milic_tasks_build_and_score_on_fixtures(lang: str, tmp_path: Path) -> None:
    from registry.evaluate.mgsm import process_results

    for task_file, records in MILIC.items():
        _write(tmp_path / "milic" / lang / f"{task_file}.jsonl", records)
    topic = _build(f"milic_topic_{lang}", tmp_path)
    docs = list(topic.test_docs())
    assert topic.doc_to_text(docs[0]) == "Topic classification. Text: TEXT-A\nTopic:"
    assert topic.doc_to_choice(docs[0]) == ["culture", "economy", "sports"]  # the split's labels, sorted
    assert [topic.doc_to_target(d) for d in docs] == [2, 0, 1]
    reading = _build(f"milic_reading_{lang}", tmp_path)
    (doc,) = list(reading.test_docs())
    assert reading.doc_to_text(doc) == "P: PASSAGE\nQ: QUESTION\nAnswer:"
    assert reading.doc_to_choice(doc) == ["w", "x", "y", "z"] and reading.doc_to_target(doc) == 2  # letter C
    response = _build(f"milic_response_{lang}", tmp_path)
    (doc,) = list(response.test_docs())
    assert response.doc_to_text(doc) == "Query: QUERY\nResponse:"
    assert response.doc_to_choice(doc) == ["r1", "r2", "r3"] and response.doc_to_target(doc) == 1
    math = _build(f"milic_math_{lang}", tmp_path)
    (doc,) = list(math.test_docs())
    assert math.doc_to_text(doc) == "Question: 2 + 3 = ?\nStep-by-Step Answer:"
    assert process_results(doc, ["2 + 3 = 5. The answer is 5."]) == {"exact_match": 1}
    assert process_results(doc, ["The answer is 6."]) == {"exact_match": 0}


def test_milic_record_with_other_fields_fails_in_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "milic" / "bo" / "reading_comprehension.jsonl", [{"context": "P", "choices": ["a"], "label": 0}])
    with pytest.raises(Exception, match="lack passage, question, options, answer.*docs/eval.md") as info:
        _build("milic_reading_bo", tmp_path)
    assert "\n" not in str(info.value).strip()
    _write(
        tmp_path / "milic" / "bo" / "reading_comprehension.jsonl",
        [{"passage": "P", "question": "Q", "options": ["a", "b"], "answer": "E"}],
    )
    with pytest.raises(Exception, match="answer 'E' is neither an index nor a letter"):
        _build("milic_reading_bo", tmp_path)


@pytest.mark.parametrize(("suite", "lang"), [("bod_Tibt", "bo"), ("uig_Arab", "ug"), ("mon_Mong", "mn")])
def test_milic_is_in_the_bo_ug_mn_suites(suite: str, lang: str) -> None:
    tasks = {t.task for t in load_suite(SUITES / f"{suite}.yaml").tasks}
    assert {f"milic_{t}_{lang}" for t in ("topic", "reading", "response", "math")} <= tasks


def test_optional_tasks_are_skipped_without_data_required_ones_stop(shared_data: Path, tmp_path: Path) -> None:
    suite = load_suite(SUITES / "bod_Tibt.yaml")
    planned = [p.spec.name for p in plan_suite(suite, tasks_dir=TASKS, data_dir=shared_data)]
    assert planned == ["sib200_bod_Tibt", "flores_bod_Tibt", "sib200_eng_Latn", "flores_eng_Latn"]
    # With the MiLiC files there, they run.
    data = tmp_path / "data"
    data.mkdir()
    for sub in ("sib200", "flores200"):
        (data / sub).symlink_to(shared_data / sub)
    for task_file, records in MILIC.items():
        _write(data / "milic" / "bo" / f"{task_file}.jsonl", records)
    planned = [p.spec.name for p in plan_suite(suite, tasks_dir=TASKS, data_dir=data)]
    assert planned[2:6] == ["milic_topic_bo", "milic_reading_bo", "milic_response_bo", "milic_math_bo"]
    # Asked for by name, an optional task is required.
    with pytest.raises(DataNotFoundError, match="belebele/bod_Tibt.jsonl"):
        plan_suite(select_tasks(suite, ["belebele_bod_Tibt"]), tasks_dir=TASKS, data_dir=shared_data)
    # The Traditional-Mongolian suite's MiLiC tasks are required: without the data it stops, saying why.
    with pytest.raises(DataNotFoundError, match="milic/mn/text_classification.jsonl"):
        plan_suite(load_suite(SUITES / "mon_Mong.yaml"), tasks_dir=TASKS, data_dir=shared_data)


def test_a_suite_with_nothing_to_run_says_so(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("language: ben_Beng\ntasks: [{task: belebele_ben_Beng, optional: true}]\n")
    with pytest.raises(EvaluationError, match="No task of the ben_Beng suite has its data in"):
        plan_suite(load_suite(suite), tasks_dir=TASKS, data_dir=tmp_path)
