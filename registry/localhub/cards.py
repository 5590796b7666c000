"""README front matter -> `cardData` and tags, as the Hub derives them for info and search."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


MAX_FRONT_MATTER = 256 * 1024


class CardError(ValueError):
    """README front matter this hub refuses to read (bad YAML, aliases, too big, not a mapping)."""


@functools.cache
def _loader() -> type:
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        """yaml.SafeLoader without anchors/aliases: they make a few bytes expand without bound."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, "YAML aliases (*name) are not accepted in model cards", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


def split_front_matter(text: str) -> str | None:
    """The YAML text between the leading `---` lines (a leading blank line is allowed), or None."""
    text = text.lstrip("\ufeff")
    stripped = text.lstrip("\r\n")
    if not stripped.startswith("---"):
        return None
    lines = stripped.splitlines()
    if lines[0].strip() != "---":
        return None
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            return "\n".join(lines[1:end])
    return None


def load_front_matter(text: str) -> dict[str, Any] | None:
    """The front matter as a mapping (None when there is none).

    Raises:
        CardError: invalid YAML, aliases, over `MAX_FRONT_MATTER` bytes, or not a mapping.
    """
    import yaml

    block = split_front_matter(text)
    if block is None:
        return None
    if len(block.encode("utf-8", errors="replace")) > MAX_FRONT_MATTER:
        raise CardError(f"README front matter is over {MAX_FRONT_MATTER // 1024} KiB")
    try:
        data = yaml.load(block, Loader=_loader())  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise CardError(f"Invalid YAML in README front matter: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError("README front matter must be a YAML mapping")
    try:  # dates and other YAML scalars become strings; keys JSON cannot hold are refused
        return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]
    except (TypeError, ValueError, RecursionError) as exc:
        raise CardError(f"README front matter cannot be represented as JSON: {exc}") from None


# License ids the Hub accepts in `license:` (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa
    unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1
    llama3.2 llama3.3 llama4 gemma unknown other""".split()
)


def metadata_problems(card: dict[str, Any]) -> list[str]:
    """What the Hub's validate-yaml would refuse in a parsed card (empty when it is fine)."""
    problems = []
    licenses = card.get("license")
    for value in licenses if isinstance(licenses, list) else [] if licenses is None else [licenses]:
        if not isinstance(value, str) or value.lower() not in HUB_LICENSES:
            problems.append(f'"license" must be one of the Hub\'s license ids (or "other"), not {value!r}')
    index = card.get("model-index")
    if index is not None and not (
        isinstance(index, list) and all(isinstance(m, dict) and isinstance(m.get("results", []), list) for m in index)
    ):
        problems.append('"model-index" must be an array of {name, results} objects')
    for key in ("tags", "language", "datasets"):
        value = card.get(key)
        if value is not None and not isinstance(value, str | list):
            problems.append(f'"{key}" must be a string or an array of strings')
    return problems


def parse_front_matter(text: str) -> dict[str, Any]:
    """The front matter as a mapping; {} when absent or refused (a bad card never breaks a listing)."""
    try:
        return load_front_matter(text) or {}
    except CardError as exc:
        logger.debug("Ignoring README front matter: %s", exc)
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
