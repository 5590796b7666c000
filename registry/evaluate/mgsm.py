"""MGSM: final-number extraction and the lm-eval hooks of the `mgsm_*` tasks.

Generations end in a sentence such as "The answer is 11." / "উত্তর হল ১১।" / "సమాధానం 11.". We read
the first number after the last answer phrase, or the last number when there is none, after
mapping every Unicode decimal digit (Bengali ০-৯, Telugu ౦-౯, ...) to ASCII and dropping
thousands separators (western 2,125 and Indian 1,00,000 grouping). Exact match compares the value
with the gold `answer_number`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

# Localised "the answer is" of the MGSM exemplars (url-nlp `MGSM_EXEMPLARS`); tuple: immutable.
ANSWER_PHRASES: tuple[str, ...] = ("The answer is", "উত্তর হল", "సమాధానం")

# A number: grouped (1,234 / 1,00,000, optionally with decimals) or plain (1234, 3.5, .5).
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{2,3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")


def normalize_digits(text: str) -> str:
    """Map every Unicode decimal digit (category Nd) to its ASCII digit; leave the rest.

    Args:
        text: any string.

    Returns:
        The string with "০১২" / "౦౧౨" / "٠١٢" etc. replaced by "012".
    """
    return "".join(str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in text)


def _parse(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def extract_number(text: str, *, answer_phrases: tuple[str, ...] = ANSWER_PHRASES) -> float | None:
    """The final answer of a chain-of-thought generation, as a float.

    Args:
        text: the model's generation.
        answer_phrases: phrases that introduce the answer; the first number after the last one
            found wins. Without any, the last number in the text wins.

    Returns:
        The number, or None when the text holds no number.
    """
    normalized = normalize_digits(text)
    cut = -1
    for phrase in answer_phrases:
        cut = max(cut, normalized.rfind(phrase))
    if cut >= 0:
        after = _NUMBER.findall(normalized[cut:])
        if after:
            return _parse(after[0])
    numbers = _NUMBER.findall(normalized)
    return _parse(numbers[-1]) if numbers else None


def is_correct(prediction: float | None, gold: float) -> bool:
    """Exact match of an extracted number with the gold answer (tolerant only to float noise)."""
    return prediction is not None and math.isclose(prediction, float(gold), rel_tol=0.0, abs_tol=1e-6)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, int]:
    """lm-eval `process_results` hook: exact match of the extracted number.

    Args:
        doc: an MGSM record (with `answer_number`).
        results: the one generation lm-eval produced for it.

    Returns:
        `{"exact_match": 0 or 1}`.
    """
    return {"exact_match": int(is_correct(extract_number(results[0]), doc["answer_number"]))}


def _split_prefix(text: str) -> tuple[str, str]:
    """ "প্রশ্ন: রজারের ..." -> ("প্রশ্ন:", "রজারের ...")."""
    head, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"MGSM exemplar does not start with a localised 'Question:'/'Answer:' label: {text[:40]!r}")
    return head.strip() + ":", rest.strip()


def load_mgsm(*, data_files: dict[str, str], **_metadata: Any) -> datasets.DatasetDict:
    """lm-eval `custom_dataset` hook: MGSM problems plus the native exemplars as one dataset.

    The two files have different fields, which `datasets`' json builder cannot put in one dataset
    dict, so both are mapped to `prompt` / `target` / `answer_number`, with the localised
    "Question:" and "Step-by-Step Answer:" labels taken from the exemplars.

    Args:
        data_files: `{"test": ".../mgsm/<lang>.jsonl", "exemplars": ".../mgsm/exemplars/<lang>.jsonl"}`.
        **_metadata: lm-eval also passes the task metadata; ignored.

    Returns:
        A DatasetDict with the `test` and `exemplars` splits.

    Raises:
        FileNotFoundError: a data file is missing.
        ValueError: an exemplar lacks its localised labels.
    """
    import datasets

    exemplars = [json.loads(line) for line in Path(data_files["exemplars"]).read_text("utf-8").splitlines() if line]
    q_label, _ = _split_prefix(exemplars[0]["q"])
    a_label, _ = _split_prefix(exemplars[0]["a"])
    shots = []
    for ex in exemplars:
        _, question = _split_prefix(ex["q"])
        _, answer = _split_prefix(ex["a"])
        shots.append(
            {
                "prompt": f"{q_label} {question}\n{a_label}",
                "target": answer,
                "answer_number": float(ex["answer_number"]),
            }
        )
    problems = []
    for line in Path(data_files["test"]).read_text("utf-8").splitlines():
        if line:
            rec = json.loads(line)
            problems.append(
                {
                    "prompt": f"{q_label} {rec['question']}\n{a_label}",
                    "target": str(rec["answer_number"]),
                    "answer_number": float(rec["answer_number"]),
                }
            )
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(problems), "exemplars": datasets.Dataset.from_list(shots)}
    )
