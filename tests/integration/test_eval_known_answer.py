"""Known answers: a tiny model trained to memorise a handful of SIB-200 items scores 100 % on
them; one trained on shuffled labels scores exactly its (near-chance) label agreement.

Training uses the lab's loop (`registry.lab.train`) and the lab's SFT prompt format, so this also
checks that the lab teaches the format our `sib200_*` tasks ask in.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from registry.evaluate.runner import evaluate_model
from registry.evaluate.sources import resolve_model
from registry.evaluate.suite import Suite, SuiteTask
from registry.evaluate.tasks import load_task
from registry.lab.corpora import SibRecord
from registry.lab.sft import PromptFormat
from registry.lab.train import Example, train_causal_lm

TASKS = Path(__file__).resolve().parents[2] / "recipes" / "tasks"
LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")


def _items(shared_data: Path, per_label: int) -> list[SibRecord]:
    """The first `per_label` short English SIB train records of each label."""
    rows = [json.loads(line) for line in (shared_data / "sib200/eng_Latn/train.jsonl").read_text("utf-8").splitlines()]
    picked = []
    for label in LABELS:
        picked += [
            SibRecord(index_id=r["index_id"], text=r["text"], category=label)
            for r in rows
            if r["category"] == label and len(r["text"]) < 120
        ][:per_label]
    return picked


def _train(base: Path, records: list[SibRecord], out: Path) -> Path:
    fmt = PromptFormat()
    examples = [Example(prompt=fmt.prompt(r), completion=fmt.target_delimiter + r.category) for r in records]
    result = train_causal_lm(
        base, examples, out_dir=out, steps=80, lr=5e-3, batch_size=len(examples), seq_len=160, seed=0, progress=False
    )
    assert result.last_loss < result.first_loss
    return out


def _accuracy(model: Path, records: list[SibRecord], root: Path) -> float:
    data = root / "data" / "sib200" / "known"
    data.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        json.dumps({"index_id": r.index_id, "lang": "eng_Latn", "category": r.category, "text": r.text}) + "\n"
        for r in records
    )
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "sib200_known.yaml").write_text(
        f"include: {TASKS / '_sib200.yaml'}\ntask: sib200_known\ndataset_kwargs:\n  data_files:\n"
        "    train: $DATA_DIR/sib200/known/train.jsonl\n    test: $DATA_DIR/sib200/known/test.jsonl\n"
    )
    suite = Suite(language="eng_Latn", tasks=(SuiteTask(task="sib200_known", num_fewshot=0),))
    record = evaluate_model(
        resolve_model(str(model)),
        suite=suite,
        suite_path=root / "suite.yaml",
        tasks_dir=tasks,
        data_dir=root / "data",
        data_source="test",
        device="cpu",
        batch_size=8,
        cache=None,
    )
    (task,) = record.tasks
    assert task.n_samples == len(records) and not task.limited
    return task.metrics["acc"].value


def test_lab_prompt_format_is_the_task_format() -> None:
    spec = load_task(TASKS / "sib200_eng_Latn.yaml")
    fmt = PromptFormat()
    assert spec.config["doc_to_text"] == fmt.text_template.replace("{text}", "{{text}}")
    assert spec.config["target_delimiter"] == fmt.target_delimiter
    assert spec.config["fewshot_delimiter"] == fmt.fewshot_delimiter
    assert tuple(spec.config["doc_to_choice"]) == LABELS


@pytest.mark.slow
def test_memorised_items_score_100_and_shuffled_labels_score_their_agreement(
    shared_data: Path, tiny_family, tmp_path: Path
) -> None:
    items = _items(shared_data, per_label=2)
    assert len(items) == 14
    before = _accuracy(tiny_family.base, items, tmp_path / "before")

    memorised = _train(tiny_family.base, items, tmp_path / "memorised")
    assert _accuracy(memorised, items, tmp_path / "eval_true") == 1.0

    shuffled_labels = [r.category for r in items]
    random.Random(7).shuffle(shuffled_labels)
    shuffled = [
        SibRecord(index_id=r.index_id, text=r.text, category=c) for r, c in zip(items, shuffled_labels, strict=True)
    ]
    agreement = sum(a.category == b.category for a, b in zip(items, shuffled, strict=True)) / len(items)
    assert agreement <= 0.3  # near chance (1/7) for this seed
    model = _train(tiny_family.base, shuffled, tmp_path / "shuffled")
    assert _accuracy(model, shuffled, tmp_path / "eval_shuffled") == 1.0  # it learnt the wrong labels...
    assert _accuracy(model, items, tmp_path / "eval_true2") == pytest.approx(agreement)  # ...so truth scores chance
    assert before < 1.0
