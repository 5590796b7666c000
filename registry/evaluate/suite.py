"""Evaluation suites: `recipes/eval/<lang>.yaml` lists the tasks, shots and limits for a language."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import EvaluationError

# Keys only an lm-eval task config has at its top level (a suite has language/description/tasks).
_TASK_CONFIG = re.compile(r"^(output_type|include|doc_to_text|dataset_path):", re.MULTILINE)


class SuiteTask(BaseModel):
    """One task of a suite.

    Attributes:
        task: a task name from `recipes/tasks/` (the file stem).
        num_fewshot: shots; None keeps the task config's own `num_fewshot`.
        limit: evaluate only the first N documents (results are then labelled as limited).
        optional: skip the task, with a warning, when its data files are missing (Belebele
            outside English, MiLiC-Eval: data that must be fetched by hand); a required task
            with missing data stops the run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    optional: bool = False


class Suite(BaseModel):
    """A language's evaluation suite.

    Attributes:
        language: the target language (FLORES code, e.g. `ben_Beng`).
        description: one line for humans.
        tasks: the tasks, in the order they run and are reported.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    language: str
    description: str = ""
    tasks: tuple[SuiteTask, ...] = Field(min_length=1)

    @field_validator("language")
    @classmethod
    def _flores_code(cls, value: str) -> str:
        lang, _, script = value.partition("_")
        if not (len(lang) == 3 and lang.islower() and len(script) == 4 and script[0].isupper()):
            raise ValueError(f"language must be a FLORES-200 code like ben_Beng, got {value!r}")
        return value

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: tuple[SuiteTask, ...]) -> tuple[SuiteTask, ...]:
        names = [t.task for t in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks listed twice: {', '.join(dupes)}")
        return value


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file.

    Args:
        path: `recipes/eval/<lang>.yaml`.

    Returns:
        The Suite.

    Raises:
        EvaluationError: the file is missing, not YAML, or invalid (the message names the field).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EvaluationError(
            f"Suite {path} does not exist; suites live in recipes/eval/<lang>.yaml.", suite=str(path)
        ) from exc
    if _TASK_CONFIG.search(text):
        raise EvaluationError(
            f"{path} is a task config, not a suite; pass a suite such as recipes/eval/ben_Beng.yaml "
            "(a suite lists tasks by name).",
            suite=str(path),
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvaluationError(f"Suite {path} is not valid YAML: {exc}", suite=str(path)) from exc
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise EvaluationError(f"Suite {path} is invalid: {problems}", suite=str(path)) from exc


def select_tasks(suite: Suite, names: list[str] | tuple[str, ...]) -> Suite:
    """The suite restricted to `names` (in suite order); an empty selection keeps every task.

    A task named here is no longer optional: asking for it by name and skipping it would hide
    that its data is missing.

    Raises:
        EvaluationError: a name that is not in the suite (the message lists the suite's tasks).
    """
    if not names:
        return suite
    known = [t.task for t in suite.tasks]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EvaluationError(
            f"Task(s) {', '.join(unknown)} are not in the {suite.language} suite; choose from: {', '.join(known)}.",
            task=unknown[0],
        )
    chosen = tuple(t.model_copy(update={"optional": False}) for t in suite.tasks if t.task in names)
    return suite.model_copy(update={"tasks": chosen})
