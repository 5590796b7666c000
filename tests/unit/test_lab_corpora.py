"""Lab training text: only training-side sources, never FLORES devtest; a loud synthetic fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import DataNotFoundError
from registry.lab.corpora import (
    FLORES_DEVTEST_FIRST_INDEX,
    SIB_LABELS,
    load_corpora,
    resolve_data_dir,
    synthetic_corpora,
)
from registry.lab.sft import PromptFormat, instruction_examples, sib_examples


def test_resolve_prefers_the_explicit_dir(tmp_path: Path) -> None:
    (tmp_path / "d" / "mono").mkdir(parents=True)
    assert resolve_data_dir(tmp_path / "d", cwd=tmp_path) == tmp_path / "d"
    with pytest.raises(DataNotFoundError, match="has no mono/ folder"):
        resolve_data_dir(tmp_path / "missing", cwd=tmp_path)


def test_resolve_default_is_shared_data_beside_cwd(tmp_path: Path) -> None:
    work = tmp_path / "work" / "main"
    work.mkdir(parents=True)
    assert resolve_data_dir(None, cwd=work) is None
    (tmp_path / "work" / "shared" / "data" / "mono").mkdir(parents=True)
    assert resolve_data_dir(None, cwd=work) == (tmp_path / "work" / "shared" / "data").resolve()


def test_synthetic_corpora_are_deterministic_and_in_script() -> None:
    a = synthetic_corpora(languages=("ben_Beng", "khk_Cyrl"), seed=4)
    b = synthetic_corpora(languages=("ben_Beng", "khk_Cyrl"), seed=4)
    assert a == b and a.synthetic
    assert all(0x0980 <= ord(c) <= 0x09FF for c in a.target["ben_Beng"][0] if c not in " .")
    assert all(0x0400 <= ord(c) <= 0x04FF for c in a.target["khk_Cyrl"][0] if c not in " .")
    assert {r.category for r in a.sib_train} == set(SIB_LABELS)


def test_real_corpora_exclude_evaluation_text(shared_data: Path) -> None:
    corpora = load_corpora(shared_data, languages=("ben_Beng", "uig_Arab"), seed=0)
    assert not corpora.synthetic
    assert all(r.index_id < FLORES_DEVTEST_FIRST_INDEX for r in corpora.sib_train)
    assert len(corpora.sib_train) > 100
    assert not any(s.startswith(("flores200", "belebele", "mgsm")) or "/dev" in s or "/test" in s
                   for s in corpora.sources)  # fmt: skip
    devtest = set()
    for lang in ("eng_Latn", "ben_Beng", "uig_Arab"):
        with (shared_data / "flores200" / "devtest" / f"{lang}.jsonl").open(encoding="utf-8") as handle:
            devtest |= {json.loads(line)["text"] for line in handle}
    trained = set(corpora.english) | {r.text for r in corpora.sib_train}
    for docs in corpora.target.values():
        trained |= set(docs)
    assert not trained & devtest


def test_missing_language_text_is_an_error(shared_data: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no mono/ text for xyz_Latn"):
        load_corpora(shared_data, languages=("xyz_Latn",), seed=0)


def test_sib_examples_use_the_eval_prompt_format() -> None:
    corpora = synthetic_corpora(languages=("ben_Beng",), seed=0)
    fmt = PromptFormat()
    examples = sib_examples(corpora.sib_train[:20], fmt=fmt, max_shots=5, seed=0)
    assert len(examples) == 20
    first = corpora.sib_train[0]
    assert examples[0].prompt.endswith(f"Topic classification. Sentence: {first.text}\nTopic:")
    assert examples[0].completion == " " + first.category
    shots = [e.prompt.count("\n\n") for e in examples]
    assert min(shots) >= 0 and max(shots) <= 5 and len(set(shots)) > 1


def test_instruction_examples() -> None:
    corpora = synthetic_corpora(languages=("ben_Beng",), seed=0)
    example = instruction_examples(corpora.instructions[:1])[0]
    assert example.prompt.startswith("### Instruction:\n") and example.prompt.endswith("### Response:\n")
    assert example.completion in SIB_LABELS
