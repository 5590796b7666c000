"""Run a suite on one model with lm-evaluation-harness, one task at a time, through the cache.

The model is loaded once (lm-eval's `HFLM`) and only if some task misses the cache, so a model
whose results are all cached costs a hash of its files and nothing else.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import DataNotFoundError, EvaluationError
from registry.evaluate.bars import harness_progress
from registry.evaluate.cache import ResultCache, cache_key
from registry.evaluate.records import EvalRecord, MetricValue, TaskResult
from registry.evaluate.sources import ResolvedModel
from registry.evaluate.suite import Suite
from registry.evaluate.tasks import TaskSpec, find_task, task_hash

if TYPE_CHECKING:
    from lm_eval.api.model import LM

log = logging.getLogger(__name__)

FEWSHOT_SEED = 1234  # lm-eval's default; fixed so k-shot contexts are the same on every run
HARNESS_SEEDS = (0, 1234, 1234)  # python, numpy, torch: what lm-eval's simple_evaluate sets by default
# lm-eval modules that draw tqdm bars on our path (building requests, tokenizing, running them).
_SKIP_KEYS = ("alias", "name", "sample_len", "samples")


@dataclass(frozen=True)
class PlannedTask:
    """A suite task resolved against the task configs and the data.

    Attributes:
        spec: the task config.
        num_fewshot: shots to use.
        limit: documents to evaluate (None: all).
        task_hash: `tasks.task_hash` of the config and its data files.
    """

    spec: TaskSpec
    num_fewshot: int
    limit: int | None
    task_hash: str


def count_documents(item: PlannedTask, *, data_dir: Path) -> int | None:
    """Documents the task will score: its evaluation split's rows (JSON lines), capped by the limit;
    None when the data is not a local JSON-lines file (a Hub dataset)."""
    config = item.spec.config
    split = config.get("test_split") or config.get("validation_split")
    rel = item.spec.data_files().get(str(split)) if split else None
    path = data_dir / rel if rel else None
    if path is None or not path.is_file() or path.suffix not in (".jsonl", ".json"):
        return item.limit
    with path.open("rb") as fh:
        rows = sum(1 for line in fh if line.strip())
    return min(rows, item.limit) if item.limit else rows


def document_cost(item: PlannedTask) -> int:
    """A document's relative cost: its forward passes (one per answer choice) times the length of
    its prompt (the shots plus itself). SIB-200 5-shot costs 42 FLORES sentences; measured on the lab
    SFT this predicts the rest of the suite within 2x, where counting documents was 10x off."""
    config = item.spec.config
    choices = config.get("doc_to_choice")
    if isinstance(choices, list):
        passes = len(choices)
    else:
        passes = 4 if config.get("output_type") == "multiple_choice" else 1
    return passes * (item.num_fewshot + 1)


class _Pace:
    """The suite's remaining time: the cost units (`document_cost`) per second of the tasks run so
    far, applied to the documents left (rough: generation length varies with the model)."""

    def __init__(self, docs: dict[str, int | None], costs: dict[str, int]) -> None:
        self.docs = docs
        self.costs = costs
        self.left = dict(docs)
        self.seconds = 0.0
        self.units = 0

    def done(self, name: str, seconds: float) -> None:
        count = self.left.pop(name, None) or 0
        self.seconds += seconds
        self.units += count * self.costs.get(name, 1)
        remaining = sum(n for n in self.left.values() if n)
        units_left = sum(n * self.costs.get(task, 1) for task, n in self.left.items() if n)
        rate = self.units / self.seconds if self.seconds > 0 else 0.0
        if count:
            log.info("%s: %d documents in %.0f s (%.1f/s)", name, count, seconds, count / max(seconds, 1e-9))
        if remaining and rate > 0:
            log.info("About %.0f s left for %d more documents", units_left / rate, remaining)


def plan_suite(suite: Suite, *, tasks_dir: Path, data_dir: Path, limit: int | None = None) -> list[PlannedTask]:
    """Resolve every task of `suite`: config, shots, effective limit, hash; check the data is there.

    Args:
        suite: the suite.
        tasks_dir: where the task configs live (`recipes/tasks`).
        data_dir: the data directory.
        limit: the `--limit` override; the smaller of it and a task's own limit wins.

    Returns:
        One PlannedTask per suite task, in order; an optional task whose data is missing is left
        out (with a warning).

    Raises:
        EvaluationError: an unknown task or a broken config, or every task left out.
        DataNotFoundError: a data file of a required task is missing.
    """
    planned = []
    for item in suite.tasks:
        spec = find_task(item.task, tasks_dir=tasks_dir)
        try:
            spec.to_lm_eval(data_dir=data_dir)  # raises DataNotFoundError early, before any model loads
        except DataNotFoundError:
            if not item.optional:
                raise
            missing = next((rel for rel in spec.data_files().values() if not (data_dir / rel).is_file()), "?")
            log.warning(
                "Skipping optional task %s: no %s in the data (docs/eval.md says how to add it)", item.task, missing
            )
            continue
        shots = item.num_fewshot if item.num_fewshot is not None else int(spec.config.get("num_fewshot") or 0)
        limits = [x for x in (limit, item.limit) if x is not None]
        planned.append(
            PlannedTask(
                spec=spec,
                num_fewshot=shots,
                limit=min(limits) if limits else None,
                task_hash=task_hash(spec, data_dir=data_dir if spec.uses_local_data() else None),
            )
        )
    if not planned:
        raise EvaluationError(
            f"No task of the {suite.language} suite has its data in {data_dir}; see docs/eval.md for how to add it."
        )
    return planned


def resolve_device(device: str) -> str:
    """`registry.device.resolve_device` raising `EvaluationError`."""
    from registry.device import resolve_device as resolve

    return resolve(device, error=EvaluationError)


def lm_eval_version() -> str:
    """The installed lm-evaluation-harness version."""
    from importlib.metadata import version

    return version("lm_eval")


def load_lm(model_dir: Path, *, device: str, batch_size: int | None = None) -> LM:
    """Wrap a checkpoint directory in `scoring.FastLM` (lm-eval's HFLM with batched scoring; dtype
    from its config).

    `batch_size` N caps a generation batch at N rows and a scoring pass at N full-length rows
    (N x max_length tokens); None or 0 sizes both from the free memory (`scoring.auto_batch_tokens`).

    Generation lengths are the tasks' own: lm-eval passes a task's `max_gen_toks` to `generate`
    as `max_length`, but a `max_new_tokens` in the checkpoint's generation_config.json takes
    precedence in transformers (the lab writes 64, which cut MGSM's chains of thought short).
    So the checkpoint's `max_new_tokens` is cleared here and the task configs set the limit.

    Raises:
        EvaluationError: transformers cannot load it.
    """
    from registry.evaluate.scoring import FastLM

    try:
        lm = FastLM(pretrained=str(model_dir), device=device, batch_size=batch_size or 1, dtype="auto",
                    max_gen_rows=batch_size or None)  # fmt: skip
        if batch_size:
            lm.set_row_budget(batch_size)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EvaluationError(f"Cannot load {model_dir} for evaluation: {exc}") from exc
    generation_config = getattr(lm.model, "generation_config", None)
    if generation_config is not None:
        generation_config.max_new_tokens = None
    return lm


def _metric(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_task_results(raw: dict[str, Any], task: str) -> tuple[dict[str, MetricValue], int, int]:
    """Pull one task's metrics out of lm-eval's results dict.

    Args:
        raw: the dict `lm_eval.evaluator.evaluate` returned.
        task: the task name.

    Returns:
        (metrics by name, documents evaluated, documents in the split).

    Raises:
        EvaluationError: the task is missing from the output.
    """
    try:
        values = raw["results"][task]
        higher = raw["higher_is_better"][task]
        counts = raw["n-samples"][task]
    except KeyError as exc:
        raise EvaluationError(f"lm-eval returned no results for task {task}.", task=task) from exc
    metrics: dict[str, MetricValue] = {}
    for key, value in values.items():
        name, _, _filter = key.partition(",")
        if name in _SKIP_KEYS or name.endswith("_stderr"):
            continue
        number = _metric(value)
        if number is None:
            continue
        stderr = _metric(values.get(f"{name}_stderr,{_filter}"))
        metrics[name] = MetricValue(
            value=number,
            stderr=stderr if stderr is not None and math.isfinite(stderr) else None,
            higher_is_better=bool(higher.get(name, True)),
        )
    return metrics, int(counts["effective"]), int(counts["original"])


@contextmanager
def _rolling_without_bos(lm: LM, *, enabled: bool) -> Iterator[None]:
    """Score rolling log-likelihoods as log p(text | BOS), not log p(BOS text | BOS).

    HFLM prepends BOS as the context of the first window, and with a tokenizer that adds BOS
    itself (Llama's, ours) the encoded text starts with a second BOS whose probability then
    counts as part of the document (about one token of NLL per sentence, which inflates bits
    per byte). Encoding the text without special tokens removes it; the tests check the result
    against direct scoring with transformers.
    """
    if not enabled or not hasattr(lm, "add_bos_token"):
        yield
        return
    saved = lm.add_bos_token
    lm.add_bos_token = False
    try:
        yield
    finally:
        lm.add_bos_token = saved


def _load_task(planned: PlannedTask, config: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's task dict for one planned task: ours from its config, lm-eval's by name.

    lm-eval's own tasks are built by lm-eval from their folder (so their `!function` hooks and
    includes resolve as lm-eval's CLI would) and read their Hub dataset themselves: offline, or
    without access, that fails here, before any scoring, with one line saying so.
    """
    from lm_eval.tasks import TaskManager

    spec = planned.spec
    if not spec.lm_eval:
        loaded: dict[str, Any] = TaskManager(include_defaults=False).load([config])
        return loaded
    dataset = spec.config.get("dataset_path", "?")
    try:
        loaded = TaskManager(include_defaults=False, include_path=str(spec.path.parent)).load([spec.name])
    except (OSError, ValueError, RuntimeError, ImportError) as exc:  # datasets' download errors derive from these
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EvaluationError(
            f"lm-eval task {spec.name} reads the Hub dataset {dataset}, which cannot be loaded here ({reason}); "
            "run it where huggingface.co is reachable (HF_ENDPOINT, HF_TOKEN for gated data), or use a task of "
            "recipes/tasks with local data (docs/eval.md).",
            task=spec.name,
        ) from None
    for task in loaded["tasks"].values():
        task.set_config(key="num_fewshot", value=planned.num_fewshot)
    return loaded


def run_task(lm: LM, planned: PlannedTask, *, data_dir: Path, progress: bool = True) -> TaskResult:
    """Evaluate one task with lm-eval (seeded: the same model gives the same numbers).

    Calls `lm_eval.evaluator.evaluate` with `simple_evaluate`'s seeds rather than
    `simple_evaluate` itself: the latter also gathers environment info for its own results file
    (torch's `collect_env` and a `git describe` subprocess), about 1.5 s per task on 2 cores, and
    prints "fatal: not a git repository" on stderr whenever the working directory is not one.

    Args:
        lm: the loaded model.
        planned: the task, shots and limit.
        data_dir: the data directory.
        progress: False hides lm-eval's progress bars (`--quiet`).

    Returns:
        The TaskResult (not cached).
    """
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate

    config = planned.spec.to_lm_eval(data_dir=data_dir, num_fewshot=planned.num_fewshot)
    started = time.perf_counter()
    random.seed(HARNESS_SEEDS[0])
    np.random.seed(HARNESS_SEEDS[1])
    torch.manual_seed(HARNESS_SEEDS[2])
    with harness_progress(enabled=progress):
        loaded = _load_task(planned, config)  # builds the dataset splits
        for task in loaded["tasks"].values():
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
        with _rolling_without_bos(lm, enabled=config["output_type"] == "loglikelihood_rolling"):
            raw = evaluate(lm=lm, task_dict=loaded, limit=planned.limit, bootstrap_iters=100, log_samples=False)
    if raw is None:
        raise EvaluationError(f"lm-eval returned nothing for task {planned.spec.name}.", task=planned.spec.name)
    metrics, n_samples, n_total = parse_task_results(raw, planned.spec.name)
    return TaskResult(
        task=planned.spec.name,
        task_hash=planned.task_hash,
        num_fewshot=planned.num_fewshot,
        n_samples=n_samples,
        n_total=n_total,
        limit=planned.limit,
        metrics=metrics,
        duration_s=round(time.perf_counter() - started, 3),
    )


def evaluate_model(
    model: ResolvedModel,
    *,
    suite: Suite,
    suite_path: Path,
    tasks_dir: Path,
    data_dir: Path,
    data_source: str,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    cache: ResultCache | None = None,
    progress: bool = True,
) -> EvalRecord:
    """Evaluate `model` on every task of `suite`, reusing cached task results.

    Args:
        model: the resolved model (local directory and identity).
        suite: the suite.
        suite_path: its file (recorded).
        tasks_dir: where task configs live.
        data_dir: the data directory.
        data_source: how the data is named in the record (a path or `hub:<repo>@<sha>`).
        limit: evaluate only the first N documents of each task (labelled in the record).
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        batch_size: rows per batch (`load_lm`); None: sized from the free memory.
        cache: where results are looked up and stored; None disables caching.
        progress: False hides the progress bars of lm-eval and transformers (`--quiet`).

    Returns:
        The EvalRecord.

    Raises:
        EvaluationError: a task config, the model or lm-eval failed.
        DataNotFoundError: data files are missing.
    """
    started = time.perf_counter()
    planned = plan_suite(suite, tasks_dir=tasks_dir, data_dir=data_dir, limit=limit)
    version = lm_eval_version()
    device = resolve_device(device)
    lm: LM | None = None
    results: list[TaskResult] = []
    pace = _Pace(
        {item.spec.name: count_documents(item, data_dir=data_dir) for item in planned},
        {item.spec.name: document_cost(item) for item in planned},
    )
    for item in planned:
        key = cache_key(
            model_key=model.identity.key,
            task_hash=item.task_hash,
            num_fewshot=item.num_fewshot,
            limit=item.limit,
            lm_eval_version=version,
        )
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            log.info("%s: cached result (%s)", item.spec.name, key[:12])
            results.append(hit.model_copy(update={"cached": True}))
            pace.left.pop(item.spec.name, None)
            continue
        if lm is None:
            log.info("Loading %s on %s", model.path, device)
            with harness_progress(enabled=progress):
                lm = load_lm(model.path, device=device, batch_size=batch_size)
        docs = pace.docs[item.spec.name]
        log.info(
            "%s: %d-shot, %s%s",
            item.spec.name,
            item.num_fewshot,
            f"{docs} documents" if docs is not None else "all documents",
            f" (--limit {item.limit})" if item.limit else "",
        )
        task_started = time.perf_counter()
        result = run_task(lm, item, data_dir=data_dir, progress=progress).model_copy(update={"device": device})
        pace.done(item.spec.name, time.perf_counter() - task_started)
        if cache is not None:
            cache.put(key, result)
        results.append(result)
    return EvalRecord(
        model=model.identity,
        suite=str(suite_path),
        language=suite.language,
        data_source=data_source,
        lm_eval_version=version,
        device=device,
        limit=limit,
        duration_s=round(time.perf_counter() - started, 3),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tasks=tuple(results),
    )
