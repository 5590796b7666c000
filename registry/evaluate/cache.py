"""Results cache: one JSON file per (model identity, task hash, shots, limit, lm-eval version).

CT and SFT inputs are evaluated once and reused by every merge that shares them. The key holds
everything that changes the numbers except the device and batch size (which move them only by
floating-point noise); each cached task result keeps the device of the run that computed it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from registry.evaluate.records import TaskResult

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$MERGELING_CACHE/eval`, else `~/.cache/mergeling/eval`."""
    root = os.environ.get("MERGELING_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mergeling") / "eval"


def cache_key(*, model_key: str, task_hash: str, num_fewshot: int, limit: int | None, lm_eval_version: str) -> str:
    """The sha256 naming one cached task result (see the module docstring for what it covers)."""
    payload = json.dumps(
        {"model": model_key, "task": task_hash, "shots": num_fewshot, "limit": limit, "lm_eval": lm_eval_version},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResultCache:
    """Task results on disk under `root`, one `<key>.json` each, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> TaskResult | None:
        """The cached result, or None (a corrupt entry is logged and ignored)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return TaskResult.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, OSError) as exc:
            log.warning("Ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def put(self, key: str, result: TaskResult) -> None:
        """Store `result` under `key` (the `cached` flag is stored as False)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(result.model_copy(update={"cached": False}).model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)
