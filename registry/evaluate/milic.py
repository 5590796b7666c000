"""MiLiC-Eval (Zhang et al. 2025, arXiv 2503.01150): the record layout our task configs read.

MiLiC-Eval (`pkupie/milic-eval` on the Hub, gated; first released as `pkupie/mlic-eval`) covers
Tibetan (`bo`), Uyghur (`ug`), Kazakh (`kk`) and Traditional-script Mongolian (`mn`). What its
dataset card and repository README say, and the configs follow: nine tasks, a train split of three
small seeded samples (for in-context examples), a dev split and a test split per task and language;
the four tasks Tao et al. 2024 report are topic classification (passage; 504 test records a
language), reading comprehension (200), response selection (407) and math reasoning (200), all
scored by accuracy.

What neither says, so Mergeling defines it: the field names inside a record. Our configs read
JSONL files in the data directory, `milic/<lang>/<task>.jsonl` (the test split), with these fields
(docs/eval.md tells how to convert the release into them):

| task file | fields |
|---|---|
| `text_classification.jsonl` | `text`, `label` (the category's name; the choices are the split's labels, sorted) |
| `reading_comprehension.jsonl` | `passage`, `question`, `options` (list of strings), `answer` |
| `response_selection.jsonl` | `context` (the query or dialogue), `options`, `answer` |
| `math_reasoning.jsonl` | `question`, `answer` (the final number) |

`answer` of a multiple-choice record is the 0-based index of the right option or its letter
(`A`, `B`, ...). A file with other fields fails with one line naming the fields it lacks.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from registry.errors import EvaluationError

if TYPE_CHECKING:
    import datasets

TOPIC_FIELDS = ("text", "label")
READING_FIELDS = ("passage", "question", "options", "answer")
RESPONSE_FIELDS = ("context", "options", "answer")
MATH_FIELDS = ("question", "answer")


def _require(dataset: datasets.Dataset, fields: tuple[str, ...], task: str) -> None:
    missing = [f for f in fields if f not in dataset.column_names]
    if missing:
        raise EvaluationError(
            f"MiLiC {task} records lack {', '.join(missing)} (they have {', '.join(dataset.column_names)}); "
            f"convert the file to the fields {', '.join(fields)} (see docs/eval.md, MiLiC-Eval)."
        )


def _gold_index(answer: Any, n_options: int) -> int:
    """The 0-based index an `answer` names: an int, a digit string or a letter A, B, ..."""
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is neither an index nor a letter")
    if isinstance(answer, int):
        index = answer
    elif isinstance(answer, str) and answer.strip().isdigit():
        index = int(answer.strip())
    elif isinstance(answer, str) and answer.strip().upper() in string.ascii_uppercase[:n_options]:
        index = string.ascii_uppercase.index(answer.strip().upper())
    else:
        raise ValueError(f"answer {answer!r} is neither an index nor a letter")
    if not 0 <= index < n_options:
        raise ValueError(f"answer {answer!r} is outside the {n_options} options")
    return index


def _options_docs(dataset: datasets.Dataset, fields: tuple[str, ...], task: str) -> datasets.Dataset:
    _require(dataset, fields, task)

    def convert(doc: dict[str, Any]) -> dict[str, Any]:
        options = [str(o) for o in doc["options"]]
        try:
            gold = _gold_index(doc["answer"], len(options))
        except ValueError as exc:
            raise EvaluationError(f"MiLiC {task}: {exc}; write the option's 0-based index or letter.") from exc
        return {"choices_": options, "gold_": gold}

    return dataset.map(convert)


def topic_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Text classification: the choices are the split's labels (sorted), the gold is the record's."""
    _require(dataset, TOPIC_FIELDS, "text_classification")
    labels = sorted({str(label) for label in dataset["label"]})
    return dataset.map(lambda doc: {"choices_": labels, "gold_": labels.index(str(doc["label"]))})


def reading_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Reading comprehension: passage, question, options, answer (index or letter)."""
    return _options_docs(dataset, READING_FIELDS, "reading_comprehension")


def response_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Response selection: context, options, answer (index or letter)."""
    return _options_docs(dataset, RESPONSE_FIELDS, "response_selection")


def math_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Math reasoning: `answer` becomes `answer_number` (a float), what `mgsm.process_results` reads."""
    _require(dataset, MATH_FIELDS, "math_reasoning")

    def convert(doc: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"answer_number": float(str(doc["answer"]).replace(",", ""))}
        except ValueError as exc:
            raise EvaluationError(
                f"MiLiC math_reasoning: answer {doc['answer']!r} is not a number; write the final number."
            ) from exc

    return dataset.map(convert)
