"""Document order: content-keyed, deterministic, and a limited SIB run sees every label."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from registry.evaluate.docs import content_order, shuffle_docs


def test_content_order_is_a_stable_permutation() -> None:
    rows = [{"text": f"s{i}", "category": "x"} for i in range(50)]
    order = content_order(rows)
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert content_order(rows) == order
    # depends on content, not position: reversing the input reverses the indices
    assert [49 - i for i in content_order(rows[::-1])] == order


def test_limited_sib_sample_covers_the_labels(shared_data: Path) -> None:
    import datasets

    rows = [json.loads(line) for line in (shared_data / "sib200/ben_Beng/test.jsonl").read_text("utf-8").splitlines()]
    assert len({r["category"] for r in rows[:40]}) == 1  # the file is sorted by label
    shuffled = shuffle_docs(datasets.Dataset.from_list(rows))
    assert len(shuffled) == len(rows) and Counter(r["category"] for r in shuffled) == Counter(
        r["category"] for r in rows
    )
    assert len({r["category"] for r in list(shuffled)[:20]}) >= 5
