"""Prompt examples in a language: a few FLORES-200 devtest sentences and SIB-200 test prompts.

Read from a folder in the `../shared/data` layout (`flores200/devtest/<lang>.jsonl`,
`sib200/<lang>/test.jsonl`) or from a Hub dataset repo with the same layout (`registry hub seed-data`).
No text is shipped with the Space.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from registry.errors import HubError

logger = logging.getLogger(__name__)

SIB_PROMPT = "Topic classification. Sentence: {text}\nTopic:"  # the lab's and the eval suite's SIB format


def _files(language: str) -> list[tuple[str, str]]:
    return [(f"flores200/devtest/{language}.jsonl", "{text}"), (f"sib200/{language}/test.jsonl", SIB_PROMPT)]


def _parse(lines: list[str], template: str, limit: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        if len(out) >= limit:
            break
        try:
            text = json.loads(line).get("text")
        except (ValueError, AttributeError):
            continue
        if isinstance(text, str) and text.strip():
            out.append(template.format(text=text.strip()))
    return out


def load_examples(
    language: str, *, data_dir: Path | None = None, hub: Any = None, repo: str | None = None, per_source: int = 3
) -> list[str]:
    """Up to `per_source` FLORES sentences and SIB prompts in `language` (empty when there is no data)."""
    examples: list[str] = []
    for path, template in _files(language):
        lines: list[str] = []
        if data_dir is not None and (data_dir / path).is_file():
            with (data_dir / path).open(encoding="utf-8") as handle:
                lines = [line for _, line in zip(range(per_source * 4), handle, strict=False)]
        elif hub is not None and repo:
            try:
                raw = hub.read_file(repo, path, repo_type="dataset")
            except HubError as exc:
                logger.info("no examples from %s/%s: %s", repo, path, exc)
                continue
            lines = raw.decode("utf-8", errors="replace").splitlines()[: per_source * 4]
        examples += _parse(lines, template, per_source)
    return examples
