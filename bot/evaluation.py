"""The pipeline's evaluation step: the merge, the CT and the SFT on the language's suite.

Results are cached per (model identity, task) in `<data>/eval-cache`, so the CT and SFT are
evaluated once however many merges use them, and a resumed job re-reads what it already computed.
A language without a suite, or without reachable evaluation data, is not an error: the merge is
published with the evaluation marked unavailable and the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig
from registry.card import NO_EVAL, describe_unavailable
from registry.errors import DataNotFoundError, HubError, HubRepoNotFoundError

if TYPE_CHECKING:
    from registry.evaluate.records import EvalRecord
    from registry.hub import HubClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOutcome:
    """Record files per model label (`merge`, `ct`, `sft`), or why there are none."""

    files: dict[str, str]
    unavailable: str | None = None


def suite_path(config: BotConfig, language: str) -> Path:
    return config.suites_dir / f"{language}.yaml"


def evaluate_models(
    config: BotConfig,
    hub: HubClient,
    *,
    language: str,
    models: dict[str, str],
    out_dir: Path,
    limit: int | None = None,
    split: str = "test",
    adapter_base: str | None = None,
) -> EvalOutcome:
    """Evaluate each model (label -> local dir or `repo@sha`) on the language's suite.

    Args:
        split: `test`, or `dev` (sweeps choose on it): the suite's tasks whose data has a dev
            split, read from `dev` files (see `dev_tasks`).
        adapter_base: the base (`repo@sha`) a model that is a LoRA adapter is evaluated on (the
            job's base): it is written out with the adapter applied, next to the records.

    Returns:
        The record files written under `out_dir`, or `unavailable` with the reason.
    """
    from registry.evaluate.cache import ResultCache
    from registry.evaluate.runner import evaluate_model
    from registry.evaluate.sources import fetch_data_repo, resolve_model
    from registry.evaluate.suite import load_suite
    from registry.evaluate.tasks import find_task
    from registry.io.lora import is_adapter

    if config.no_eval:
        return EvalOutcome({}, NO_EVAL)
    path = suite_path(config, language)
    if not path.is_file():
        return EvalOutcome({}, f"no evaluation suite for {language} (add {path.name} to recipes/eval/)")
    suite = load_suite(path)
    tasks_dir = config.tasks_dir
    if split == "dev":
        tasks_dir = dev_tasks(config.tasks_dir, out_dir / "dev-tasks")
    files = [rel for item in suite.tasks for rel in find_task(item.task, tasks_dir=tasks_dir).data_files().values()]
    if config.data_dir is not None:
        data_root, data_source = config.data_dir, str(config.data_dir)
    elif config.data_repo and files:
        try:
            data_root, data_source = fetch_data_repo(config.data_repo, files=files, hub=hub)
        except HubRepoNotFoundError:
            return EvalOutcome({}, f"the evaluation data repo {config.data_repo} is not on this Hub")
    else:
        return EvalOutcome({}, "no evaluation data configured (--eval-data-dir or --eval-data-repo)")
    if split == "dev":
        keep = [
            item for item in suite.tasks
            if all((Path(data_root) / rel).is_file() for rel in find_task(item.task, tasks_dir=tasks_dir).data_files().values())
        ]  # fmt: skip
        if not keep:
            return EvalOutcome({}, f"no task of the {language} suite has dev data")
        suite = suite.model_copy(update={"tasks": tuple(keep)})
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    cache = ResultCache(config.eval_cache)
    for label, ref in models.items():
        target = out_dir / f"{label}.json"
        if target.is_file():
            written[label] = str(target)
            continue
        resolved = resolve_model(ref, hub=hub)
        try:
            if is_adapter(resolved.path):
                resolved = _adapted(resolved, adapter_base, hub=hub, out=out_dir / f"{label}-adapted")
            record = evaluate_model(
                resolved, suite=suite, suite_path=path, tasks_dir=tasks_dir, data_dir=Path(data_root),
                data_source=data_source, limit=limit, device=config.device, batch_size=config.eval_batch_size,
                cache=cache, progress=False,
            )  # fmt: skip
        except DataNotFoundError as exc:
            return EvalOutcome({}, f"evaluation data missing: {exc}")
        except (HubError, ConnectionError):
            raise  # transient or not, the pipeline decides
        except Exception as exc:  # noqa: BLE001 (a harness failure must not lose the merge)
            log.warning("evaluation of %s failed", label, exc_info=True)
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            return EvalOutcome({}, f"evaluation of the {label} model failed ({type(exc).__name__}: {reason})")
        record.save(target)
        written[label] = str(target)
    return EvalOutcome(written)


def _adapted(resolved: Any, base: str | None, *, hub: HubClient, out: Path) -> Any:
    """A LoRA adapter evaluates as its base with the adapter applied; the record keeps the adapter's identity."""
    from dataclasses import replace

    from registry.errors import EvaluationError
    from registry.evaluate.sources import resolve_model
    from registry.io.lora import write_adapted

    if base is None:
        raise EvaluationError(
            f"{resolved.identity.reference} is a LoRA adapter and the job names no base to apply it to"
        )
    if not (out / "config.json").is_file():
        write_adapted(resolve_model(base, hub=hub).path, resolved.path, out)
    return replace(resolved, path=out)


_DEV_SPLIT = (("/test.jsonl", "/dev.jsonl"), ("flores200/devtest/", "flores200/dev_subset_from_sib200/"))


def dev_tasks(tasks_dir: Path, out: Path) -> Path:
    """A copy of the task configs reading the dev split: SIB-200 `dev.jsonl`, the FLORES dev subset.

    Tasks without dev data (MGSM, Belebele) keep their paths, which do not exist under these names
    for the dev split, and are left out of a dev evaluation by the caller.
    """
    out.mkdir(parents=True, exist_ok=True)
    for path in tasks_dir.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if any(old in text for old, _ in _DEV_SPLIT):
            for old, new in _DEV_SPLIT:
                text = text.replace(old, new)
        elif "$DATA_DIR" in text and "include:" in text:
            text = text.replace("$DATA_DIR/", "$DATA_DIR/no-dev-split/")
        (out / path.name).write_text(text, encoding="utf-8")
    return out


def read_records(files: dict[str, str]) -> dict[str, str]:
    """Record files -> their JSON text (what the job row keeps, so any machine can read them)."""
    return {label: Path(path).read_text(encoding="utf-8") for label, path in files.items()}


def load_records(texts: dict[str, str]) -> dict[str, EvalRecord]:
    """Parse the records a job row keeps (label -> JSON text)."""
    from registry.evaluate.records import EvalRecord

    return {label: EvalRecord.model_validate_json(text) for label, text in texts.items()}


def metric_value(record: EvalRecord, metric: str) -> float | None:
    """`task/metric` of a record, or None."""
    task_name, _, name = metric.partition("/")
    for task in record.tasks:
        if task.task == task_name and name in task.metrics:
            return task.metrics[name].value
    return None


def language_tables(by_language: dict[str, dict[str, EvalRecord]], unavailable: dict[str, str], *, heading: str) -> str:
    """One CT vs SFT vs merged table per language (a group merge's card and comment).

    Args:
        by_language: language -> label (ct, sft, merge) -> record.
        unavailable: language -> why it has no results.
        heading: the markdown heading prefix, e.g. "## Evaluation:" or "####".
    """
    from registry.card import comparison_markdown

    parts = []
    for language in sorted(by_language.keys() | unavailable.keys()):
        records = by_language.get(language, {})
        order = [label for label in ("ct", "sft", "merge") if label in records]
        if language in unavailable or len(order) < 2:
            why = unavailable.get(language, "no results")
            parts.append(f"{heading} {language}\n\n{describe_unavailable(why)}")
            continue
        table = comparison_markdown([(label, records[label]) for label in order])
        parts.append(
            f"{heading} {language}\n\nThe {language} CT, the SFT and the merge on the {language} suite "
            f"(differences in brackets are to the CT).\n\n{table}"
        )
    return "\n\n".join(parts)
