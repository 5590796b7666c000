"""README front matter -> `cardData` and tags, as the Hub derives them for info and search."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML block between leading `---` lines, or {} when absent or invalid."""
    import yaml

    if not text.startswith("---"):
        return {}
    lines = text.splitlines()
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            try:
                data = yaml.safe_load("\n".join(lines[1:end]))
            except yaml.YAMLError:
                logger.debug("README front matter is not valid YAML; ignoring it")
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def tags_from_card(card: dict[str, Any], *, repo_type: str) -> list[str]:
    """Tags the Hub would index for this card: `tags`, library, language, `license:`, `base_model:`, ..."""
    tags: list[str] = []
    tags += _as_list(card.get("tags"))
    tags += _as_list(card.get("library_name"))
    tags += _as_list(card.get("pipeline_tag"))
    tags += _as_list(card.get("language"))
    tags += [f"license:{v}" for v in _as_list(card.get("license"))]
    tags += [f"base_model:{v}" for v in _as_list(card.get("base_model"))]
    key = "datasets" if repo_type == "model" else None
    if key:
        tags += [f"dataset:{v}" for v in _as_list(card.get(key))]
    if repo_type == "dataset":
        tags += [f"task_categories:{v}" for v in _as_list(card.get("task_categories"))]
    seen: dict[str, None] = {}
    for t in tags:
        seen.setdefault(t, None)
    return list(seen)
