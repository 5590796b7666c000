"""lm-eval `process_docs` hooks: a fixed, content-keyed document order.

SIB-200's files are sorted by label (the first 51 test records are all science/technology) and
Belebele's are grouped by passage, so `--limit N`, which takes the first N documents, would
measure one class or a few passages. Ordering documents by a hash of their content keeps full-split
results unchanged and makes a limited run a fixed pseudo-random sample, the same on every machine
and with every library version (no RNG involved).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


def content_order(rows: list[dict[str, object]]) -> list[int]:
    """Indices of `rows` sorted by the sha256 of each row's canonical JSON (ties keep file order)."""
    keys = [
        hashlib.sha256(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()
        for r in rows
    ]
    return sorted(range(len(rows)), key=lambda i: (keys[i], i))


def shuffle_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """lm-eval hook: the split in `content_order`.

    Args:
        dataset: one split, as lm-eval passes it.

    Returns:
        The same documents, reordered.
    """
    return dataset.select(content_order(list(dataset)))
