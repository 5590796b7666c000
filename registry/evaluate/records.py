"""The results record of one evaluation run (pydantic, written as JSON)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import EvaluationError

SCHEMA_VERSION = 1


class MetricValue(BaseModel):
    """A metric with its standard error (None where lm-eval gives none, e.g. bits per byte)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    stderr: float | None = None
    higher_is_better: bool


class TaskResult(BaseModel):
    """What one task measured on one model.

    Attributes:
        task: task name (`recipes/tasks/<task>.yaml`).
        task_hash: sha256 of the merged config and its data files (`tasks.task_hash`).
        num_fewshot: shots used.
        n_samples: documents evaluated.
        n_total: documents in the test split.
        limit: the limit applied, or None for the full split.
        metrics: metric name -> value.
        duration_s: wall time of the evaluation (of the original run when served from cache).
        device: where it was computed (of the original run when served from cache; None in
            files written before this field existed).
        cached: whether this result came from the cache.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    task_hash: str
    num_fewshot: int
    n_samples: int
    n_total: int
    limit: int | None = None
    metrics: dict[str, MetricValue]
    duration_s: float
    device: str | None = None
    cached: bool = False

    @property
    def limited(self) -> bool:
        """True when fewer documents than the full split were evaluated."""
        return self.n_samples < self.n_total


class ModelIdentity(BaseModel):
    """Which model was evaluated, pinned.

    Attributes:
        reference: what the user passed (`owner/name@rev` or a path).
        repo_id: Hub repo, or None for a local model.
        revision: the revision asked for (Hub).
        sha: the resolved commit sha (Hub).
        local_path: the directory evaluated.
        weights_hash: sha256 over the weight, config and tokenizer files (local models).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None
    local_path: str | None = None
    weights_hash: str | None = None

    @property
    def key(self) -> str:
        """The cache identity: `hub:<repo>@<sha>` or `files:<weights hash>`."""
        if self.repo_id and self.sha:
            return f"hub:{self.repo_id}@{self.sha}"
        return f"files:{self.weights_hash}"

    @property
    def label(self) -> str:
        """A short name for tables."""
        if self.repo_id:
            return f"{self.repo_id}@{(self.sha or self.revision or 'main')[:8]}"
        return Path(self.local_path or self.reference).name or self.reference


class EvalRecord(BaseModel):
    """One model evaluated on one suite.

    Attributes:
        schema_version: bumped when fields change meaning.
        model: the pinned model.
        suite: the suite file.
        language: the suite's language.
        data_source: the data directory or `hub:<repo>@<sha>`.
        lm_eval_version: the harness version.
        device: where this run computed (`cpu`, `cuda`, ...); cached tasks keep their own.
        limit: the `--limit` asked for, or None.
        duration_s: wall time of the whole run.
        created_at: ISO-8601 UTC time the run finished.
        tasks: per-task results, in suite order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    model: ModelIdentity
    suite: str
    language: str
    data_source: str
    lm_eval_version: str
    device: str
    limit: int | None = None
    duration_s: float
    created_at: str
    tasks: tuple[TaskResult, ...] = Field(min_length=1)

    @property
    def limited(self) -> bool:
        """True when any task was evaluated on fewer documents than its full split."""
        return self.limit is not None or any(t.limited for t in self.tasks)

    def save(self, path: Path) -> None:
        """Write the record as indented JSON (parents created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


def load_record(path: Path) -> EvalRecord:
    """Read a results file written by `registry eval`.

    Raises:
        EvaluationError: missing, or not a results record (the message names the field).
    """
    try:
        return EvalRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvaluationError(
            f"Results file {path} does not exist; write one with `registry eval ... --output`."
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EvaluationError(
            f"{path} is not a `registry eval` results file ({'.'.join(map(str, first['loc']))}: {first['msg']})."
        ) from exc
