"""Results as `huggingface_hub.EvalResult`s, for the `model-index` of a model card.

`registry.card` calls `to_eval_results`. Partial (`--limit`) results say so in the metric name,
the dataset split (`test[:N]`) and `dataset_args`, so a card never shows them as full numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.evaluate.records import EvalRecord, TaskResult

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

# task family -> (task_type, dataset_type, dataset_name) as the model-index vocabulary has them.
_DATASETS = {
    "sib200": ("text-classification", "Davlan/sib200", "SIB-200"),
    "flores": ("text-generation", "openlanguagedata/flores_plus", "FLORES-200 devtest"),
    "mgsm": ("text-generation", "juletxara/mgsm", "MGSM"),
    "belebele": ("multiple-choice", "facebook/belebele", "Belebele"),
    "milic": ("text-classification", "pkupie/milic-eval", "MiLiC-Eval"),
}


def _dataset(task: TaskResult) -> tuple[str, str, str, str]:
    family, _, config = task.task.partition("_")
    task_type, dataset_type, dataset_name = _DATASETS.get(family, ("text-generation", family, family))
    return task_type, dataset_type, dataset_name, config


def to_eval_results(
    record: EvalRecord, *, source_url: str | None = None, source_name: str = "Mergeling registry eval"
) -> list[EvalResult]:
    """One EvalResult per (task, metric) of `record`.

    Args:
        record: a results record.
        source_url: a link to the results file or run; the card names a source only with one
            (huggingface_hub requires both or neither).
        source_name: the source's name, used with `source_url`.

    Returns:
        The EvalResults, in record order.
    """
    from huggingface_hub import EvalResult

    results = []
    for task in record.tasks:
        task_type, dataset_type, dataset_name, config = _dataset(task)
        split = f"test[:{task.n_samples}]" if task.limited else "test"
        suffix = f" (--limit: {task.n_samples} of {task.n_total} documents)" if task.limited else ""
        args = {"num_fewshot": task.num_fewshot, "task_hash": task.task_hash}
        if task.limited:
            args["limit"] = task.n_samples
        for metric, mv in task.metrics.items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=f"{task.task} ({task.num_fewshot}-shot)",
                    dataset_type=dataset_type,
                    dataset_name=f"{dataset_name} {config}{suffix}",
                    dataset_config=config or None,
                    dataset_split=split,
                    dataset_args=args,
                    metric_type=metric,
                    metric_value=round(mv.value, 6),
                    metric_name=f"{metric}{suffix}",
                    source_name=source_name if source_url else None,
                    source_url=source_url,
                )
            )
    return results
