"""Per-tensor parameter values, as mergekit writes them: gradients over layers and `filter:` conditions.

Any scalar parameter of a recipe (top-level `parameters:` or a model's `parameters:`) may be

- a number (or true/false, or text): the same value for every tensor;
- a gradient, a list of numbers: interpolated over the layer index. A tensor of layer `i` of `n`
  gets `t = i / (n - 1)` (`t = 1` when `n == 1`), embeddings, final norm and head `t = 0`; the
  list is read at `t * (len - 1)` with linear interpolation between neighbours (lists of
  booleans or text pick `values[int(t * (len - 1))]`);
- a list of conditions `[{filter: self_attn, value: X}, ..., {value: default}]`: the first whose
  `filter` is a substring of the tensor's name (or is missing or `*`) gives the value, itself a
  number or a gradient; a single `{filter:, value:}` mapping counts as a list of one.

`evaluate` is mergekit 0.1.5's `evaluate_setting`, value for value (Python floats, same order of
operations), so per-tensor parameters give the same bits as mergekit. A condition list with no
match gives None: the next, lower-precedence place (a model's own value, then the top-level one,
then the method's default) decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

Scalar = bool | int | float | str
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


class Condition(BaseModel):
    """One `{filter: <substring of the tensor name>, value: <number or gradient>}` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Scalar | tuple[Scalar, ...]
    filter: str | None = None


Setting = Scalar | tuple[Scalar, ...] | tuple[Condition, ...]


def is_dynamic(value: Any) -> bool:
    """Whether a raw (YAML) parameter value is a gradient or a condition list rather than one value."""
    return isinstance(value, (list, tuple, dict, Condition))


def parse_setting(value: Any) -> Setting:
    """A raw YAML value as a `Setting` (lists become tuples, condition mappings `Condition`s).

    Raises:
        ValueError: says what to write (an empty list, a mapping without `value`, mixed lists).
    """
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value  # type: ignore[no-any-return]
    if not value:
        raise ValueError("an empty list; write a number, a list of numbers or [{filter: ..., value: ...}]")
    if all(isinstance(v, (bool, int, float, str)) for v in value):
        return tuple(value)
    if not all(isinstance(v, (dict, Condition)) for v in value):
        raise ValueError("mixes numbers and {filter:, value:} entries; write one kind of list")
    conditions = []
    for entry in value:
        if isinstance(entry, Condition):
            conditions.append(entry)
            continue
        try:
            conditions.append(Condition.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(
                f"condition {entry!r}: {where}: {err['msg']}; write {{filter: <part of a tensor name>, value: <number>}}"
            ) from None
    return tuple(conditions)


def leaves(setting: Setting) -> list[Scalar]:
    """Every literal value a setting holds (to validate each against the parameter's range)."""
    if isinstance(setting, tuple):
        out: list[Scalar] = []
        for item in setting:
            if isinstance(item, Condition):
                out += list(item.value) if isinstance(item.value, tuple) else [item.value]
            else:
                out.append(item)
        return out
    return [setting]


def to_plain(setting: Setting) -> Any:
    """The setting as YAML data again (mergekit's spelling)."""
    if isinstance(setting, tuple):
        return [
            item.model_dump(exclude_none=True) | ({"value": list(item.value)} if isinstance(item.value, tuple) else {})
            if isinstance(item, Condition)
            else item
            for item in setting
        ]
    return setting


def evaluate(setting: Setting, tensor_name: str, t: float, validate: Callable[[Any], Any]) -> Any:
    """The value of `setting` for one tensor at gradient position `t` (mergekit's `evaluate_setting`)."""
    if isinstance(setting, (bool, int, float, str)):
        return validate(setting)
    if not setting:
        return None
    if all(isinstance(e, (bool, int, float, str)) for e in setting):
        values = [validate(e) for e in setting]
        if not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return validate((1 - frac) * values[i0] + frac * values[i1])
    for cond in setting:
        assert isinstance(cond, Condition)
        if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
            return evaluate(cond.value, tensor_name, t, validate)
    return None


def first_of(chain: list[Setting | None], tensor_name: str, t: float, validate: Callable[[Any], Any]) -> Any:
    """The first place (highest precedence first) whose setting gives a value for this tensor, else None."""
    for setting in chain:
        if setting is None:
            continue
        value = evaluate(setting, tensor_name, t, validate)
        if value is not None:
            return value
    return None


def layer_index(name: str) -> int | None:
    """The decoder layer a tensor belongs to (`model.layers.3.mlp...` -> 3), None for embeddings, norm, head."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def gradient_t(name: str, num_layers: int | None) -> float:
    """mergekit's gradient position of a tensor: `i / (n - 1)` in the layers, 0 outside them."""
    index = layer_index(name)
    if index is None or not num_layers:
        return 0.0
    return index / (num_layers - 1) if num_layers > 1 else 1.0


def dynamic_paths(settings: Mapping[str, Setting], prefix: str) -> dict[str, Setting]:
    """The settings stored under `prefix.` (e.g. `parameters` or `models.2.parameters`), by parameter name."""
    return {path[len(prefix) + 1 :]: s for path, s in settings.items() if path.rpartition(".")[0] == prefix}


def rename_layer(name: str, index: int) -> str:
    """`name` with its layer number replaced (`model.layers.3.mlp...`, 7 -> `model.layers.7.mlp...`)."""
    match = _LAYER.search(name)
    assert match is not None
    return name[: match.start(1)] + str(index) + name[match.end(1) :]


def is_pre_weight(name: str) -> bool:
    """Outside the layers: before them (token and position embeddings) rather than after (norm, head)."""
    return "embed" in name or name.split(".")[-2:-1] in (["wte"], ["wpe"])
