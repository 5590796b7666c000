"""Our lm-eval task configs (`recipes/tasks/*.yaml`): load, resolve, hash.

The files use lm-eval's task YAML schema with three additions our loader resolves (lm-eval's own
loader cannot: its `!function` only imports modules beside the YAML file):
- `include: _template.yaml` merges a template from the same folder (the file's keys win);
- `!function registry.evaluate.mgsm.process_results` names a function by its dotted path, and
  only functions inside `registry.evaluate` are accepted;
- the string `$DATA_DIR` in any value is replaced by the data directory (a local copy of the
  `../shared/data` layout, or the snapshot of the Hub dataset repo).
Files whose name starts with `_` are templates, not tasks.

lm-eval's own tasks (`belebele_ben_Beng`, `mgsm_native_cot_bn`, ...) are accepted by name too: a
name with no file here is looked up in lm-eval's task index, and `lm_eval:NAME` asks for lm-eval's
task even where one of ours has that name. Those read their Hub datasets themselves (online only).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from registry.errors import DataNotFoundError, EvaluationError

DATA_DIR_PLACEHOLDER = "$DATA_DIR"
LM_EVAL_PREFIX = "lm_eval:"
_FUNCTION_PREFIX = "registry.evaluate."
_REQUIRED = ("task", "output_type", "doc_to_text", "doc_to_target", "test_split")
_OUTPUT_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until", "multiple_choice")


@dataclass(frozen=True)
class FunctionRef:
    """A `!function` value: the dotted path of a function inside `registry.evaluate`."""

    path: str

    def resolve(self) -> Callable[..., Any]:
        """Import and return the function.

        Raises:
            EvaluationError: the module or function does not exist.
        """
        module_name, _, attr = self.path.rpartition(".")
        try:
            function: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
            return function
        except (ImportError, AttributeError) as exc:
            raise EvaluationError(
                f"Task config names !function {self.path}, which cannot be imported ({exc}); "
                "use a function defined in registry.evaluate."
            ) from exc


class _Loader(yaml.SafeLoader):
    """SafeLoader plus `!function` (dotted path, checked against the allowed prefix)."""


def _function(loader: _Loader, node: yaml.Node) -> FunctionRef:
    path = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if not path.startswith(_FUNCTION_PREFIX):
        raise yaml.constructor.ConstructorError(
            None, None, f"!function {path!r} is outside {_FUNCTION_PREFIX}*", node.start_mark
        )
    return FunctionRef(path)


_Loader.add_constructor("!function", _function)


@dataclass(frozen=True)
class TaskSpec:
    """One task config after `include` resolution, before `$DATA_DIR` substitution.

    Attributes:
        name: the lm-eval task name (`task:`), also the file stem.
        path: the YAML file.
        config: the merged config; `!function` values are `FunctionRef`s.
        lm_eval: an lm-eval task (its own YAML in lm-eval's package), built by lm-eval by name.
    """

    name: str
    path: Path
    config: dict[str, Any]
    lm_eval: bool = False

    def data_files(self) -> dict[str, str]:
        """Split -> file, relative to the data directory (`$DATA_DIR/` stripped); {} for Hub data."""
        if self.lm_eval:
            return {}
        files = (self.config.get("dataset_kwargs") or {}).get("data_files") or {}
        prefix = DATA_DIR_PLACEHOLDER + "/"
        return {split: f[len(prefix) :] for split, f in files.items() if isinstance(f, str) and f.startswith(prefix)}

    def uses_local_data(self) -> bool:
        """Whether the task reads files from the data directory (False: a Hub dataset like milic)."""
        return bool(self.data_files())

    def to_lm_eval(self, *, data_dir: Path, num_fewshot: int | None = None) -> dict[str, Any]:
        """The config dict lm-eval's TaskManager builds a task from.

        Args:
            data_dir: where `$DATA_DIR` points.
            num_fewshot: overrides the config's `num_fewshot` when given.

        Returns:
            A fresh dict with functions resolved and paths filled in.

        Raises:
            DataNotFoundError: a data file the task needs is missing.
        """
        for rel in self.data_files().values():
            if not (data_dir / rel).is_file():
                raise DataNotFoundError(
                    f"Task {self.name} needs {data_dir / rel}, which does not exist; point --data-dir at a "
                    "copy of the shared data layout (or --data-repo at a Hub dataset seeded with "
                    "`registry hub seed-data`).",
                    path=str(data_dir / rel),
                    task=self.name,
                )
        config: dict[str, Any] = _substitute(self.config, str(data_dir))
        if num_fewshot is not None:
            config["num_fewshot"] = num_fewshot
        return config


def _substitute(value: Any, data_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace(DATA_DIR_PLACEHOLDER, data_dir)
    if isinstance(value, FunctionRef):
        return value.resolve()
    if isinstance(value, dict):
        return {k: _substitute(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, data_dir) for v in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except FileNotFoundError as exc:
        raise EvaluationError(f"Task config {path} does not exist.", task=path.stem) from exc
    except yaml.YAMLError as exc:
        raise EvaluationError(f"Task config {path} is not valid YAML: {exc}", task=path.stem) from exc
    if not isinstance(data, dict):
        raise EvaluationError(f"Task config {path} must be a mapping, got {type(data).__name__}.", task=path.stem)
    return data


def load_task(path: Path) -> TaskSpec:
    """Load and check one task config file.

    Args:
        path: `recipes/tasks/<task>.yaml`.

    Returns:
        The TaskSpec.

    Raises:
        EvaluationError: unreadable, bad include, missing keys, unknown output type, or a
            `task:` that differs from the file stem.
    """
    data = _read_yaml(path)
    include = data.pop("include", None)
    if include is not None:
        base = _read_yaml(path.parent / str(include))
        if "include" in base:
            raise EvaluationError(f"{path.parent / str(include)}: templates cannot include further templates.")
        data = {**base, **data}
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise EvaluationError(
            f"Task config {path} lacks {', '.join(missing)}; see recipes/tasks/README.md.", task=path.stem
        )
    if data["output_type"] not in _OUTPUT_TYPES:
        raise EvaluationError(
            f"Task config {path}: output_type {data['output_type']!r} is not one of {', '.join(_OUTPUT_TYPES)}.",
            task=path.stem,
        )
    if data["task"] != path.stem:
        raise EvaluationError(
            f"Task config {path} declares task {data['task']!r}; rename the file or the task to match."
        )
    return TaskSpec(name=str(data["task"]), path=path, config=data)


def find_task(name: str, *, tasks_dir: Path) -> TaskSpec:
    """Load the task called `name`: ours from `tasks_dir`, else lm-eval's (`lm_eval:NAME`: lm-eval's only).

    Raises:
        EvaluationError: no such task (the message lists ours and points at lm-eval's).
    """
    if name.startswith(LM_EVAL_PREFIX):
        return lm_eval_task(name.removeprefix(LM_EVAL_PREFIX))
    path = tasks_dir / f"{name}.yaml"
    if not name.startswith("_") and path.is_file():
        return load_task(path)
    if _is_task_name(name):
        found = _lm_eval_entry(name)
        if found is not None:
            return found
    raise EvaluationError(
        f"Unknown task {name!r} (looked for {path} and in lm-eval's tasks); ours: "
        f"{', '.join(list_tasks(tasks_dir)) or 'none'}; lm-eval's: `lm-eval ls tasks`.",
        task=name,
    )


def _is_task_name(name: str) -> bool:
    # lm-eval's names are identifiers with dashes and dots; anything else (a path) is not looked up.
    return bool(name) and all(c.isalnum() or c in "_-." for c in name) and not name.startswith(("_", "."))


def lm_eval_task(name: str) -> TaskSpec:
    """lm-eval's own task `name` (a single task, not a group or tag), from its installed YAML.

    Raises:
        EvaluationError: lm-eval has no such task (the message suggests close names).
    """
    found = _lm_eval_entry(name) if _is_task_name(name) else None
    if found is None:
        import difflib

        close = difflib.get_close_matches(name, sorted(_lm_eval_tasks()), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EvaluationError(f"lm-eval has no task {name!r}{hint}; list them with `lm-eval ls tasks`.", task=name)
    return found


def _lm_eval_entry(name: str) -> TaskSpec | None:
    found = _lm_eval_tasks().get(name)
    if found is None:
        return None
    path, config = found
    return TaskSpec(name=name, path=path, config=copy.deepcopy(config), lm_eval=True)


@cache
def _lm_eval_tasks() -> dict[str, tuple[Path, dict[str, Any]]]:
    """lm-eval's single YAML tasks: name -> (file, config with includes resolved).

    Read once per process (indexing the installed package takes seconds); the package does not
    change while it runs.
    """
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    return {
        name: (Path(entry.yaml_path), dict(entry.cfg or {}))
        for name, entry in TaskManager().task_index.items()
        if entry.kind == Kind.TASK and entry.yaml_path is not None
    }


def list_tasks(tasks_dir: Path) -> list[str]:
    """Names of every task config in `tasks_dir` (templates excluded), sorted."""
    return sorted(p.stem for p in tasks_dir.glob("*.yaml") if not p.name.startswith("_"))


def _canonical(value: Any) -> Any:
    if isinstance(value, FunctionRef):
        return f"!function {value.path}"
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def task_hash(spec: TaskSpec, *, data_dir: Path | None) -> str:
    """A content hash of what the task measures: its merged config plus its data files' bytes.

    The data directory's location is not part of it (the config is hashed before `$DATA_DIR` is
    filled in), so the same data served locally or from the Hub gives the same hash.

    Args:
        spec: the task.
        data_dir: where its data files are; None hashes the config alone (Hub-served tasks).

    Returns:
        A sha256 hex digest.
    """
    canonical = {"lm_eval_task": spec.name, **spec.config} if spec.lm_eval else spec.config
    text = json.dumps(_canonical(canonical), sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(text.encode("utf-8"))
    if data_dir is not None:
        for split, rel in sorted(spec.data_files().items()):
            digest.update(f"\0{split}\0{rel}\0".encode())
            digest.update(hashlib.sha256((data_dir / rel).read_bytes()).digest())
    return digest.hexdigest()
