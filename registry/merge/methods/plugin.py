"""The plugin interface of merge methods: parameters, passes and diagnostics, declared per method.

A method is one module that defines

- a frozen pydantic `MethodParams` subclass: the recipe's top-level `parameters:` for this method
  (the common `weight`/`density` defaults and `int8_mask` are inherited; anything else is refused
  with the list of valid keys);
- a `Merger`: the method bound to its parameters and the recipe's inputs. `merge()` merges one
  tensor; a method that needs to see the whole model first (TIES-SV's `slack_scope: model`) sets
  `scans > 0` and gets `scan(step, name, ...)` for every tensor, then `end_scan(step)`, `scans`
  times before the first `merge()`;
- a `MethodSpec`: name, summary, the params model, how to bind it, its input contract (base,
  input counts, which per-model parameters it uses), cross-field checks and its diagnostics.

`registry.merge.methods.METHODS` lists every spec explicitly. The recipe, the planner and the
engine use only this interface: none of them names a method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.merge.methods.base import TensorStats


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


class InputParams(BaseModel):
    """A model's `weight` and `density`: per input (`models[].parameters`), or as defaults for every
    input (the top-level `parameters`, see `MethodParams`). One set of validators for both."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    weight: float | None = None
    density: float | None = None

    @field_validator("weight")
    @classmethod
    def _weight_finite(cls, value: float | None) -> float | None:
        if value is not None and not _finite(value):
            raise ValueError("weight must be a finite number, e.g. 1.0")
        return value

    @field_validator("density")
    @classmethod
    def _density_range(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError("density is the kept fraction: write a number in (0, 1], e.g. 0.2")
        return value


class MethodParams(InputParams):
    """Top-level `parameters` every method accepts: defaults for each model's weight and density."""

    int8_mask: bool | None = None  # mergekit memory option; no effect on results, accepted


class ScaledParams(MethodParams):
    """`normalize` and `lambda` (mergekit's task-arithmetic family); None: the method's default."""

    normalize: bool | None = None
    lambda_: float | None = Field(default=None, alias="lambda")

    @field_validator("lambda_")
    @classmethod
    def _lambda_finite(cls, value: float | None) -> float | None:
        if value is not None and not _finite(value):
            raise ValueError("lambda must be a finite number, e.g. 1.0")
        return value


class ElectionParams(ScaledParams):
    """The sign election's conventions, on every method that elects a sign (defaults: mergekit's).

    `election_weights`: `before` (mergekit: the weights scale the deltas before the vote) or `after`
    (the vote is on the unweighted deltas, the weights act only in the disjoint merge; mergekit #474).
    `majority_sign_method`: `total` (the sign of the summed deltas, mergekit's `sum`) or `frequency`
    (the sign held by more inputs, PEFT's `frequency`, mergekit's `count`; a tie elects +).
    """

    election_weights: Literal["before", "after"] | None = None
    majority_sign_method: Literal["total", "frequency"] | None = None


def election_of(params: Any) -> dict[str, str]:
    """The election keywords of a method function, defaults filled in."""
    return {
        "election_weights": getattr(params, "election_weights", None) or "before",
        "majority_sign_method": getattr(params, "majority_sign_method", None) or "total",
    }


def check_election(params: Any, ctx: MethodContext) -> None:
    """`election_weights: after` needs non-negative weights (an entry's sign is then its own).

    Raises:
        ValueError: names the negative weight.
    """
    if getattr(params, "election_weights", None) == "after":
        negative = [w for w in ctx.weights if w < 0]
        if negative:
            raise ValueError(
                f"election_weights: after needs weights >= 0 (got {negative[0]}); "
                "use election_weights: before for negative weights"
            )


@dataclass(frozen=True)
class MethodContext:
    """What a method learns about the recipe's inputs (the non-base models, in recipe order)."""

    refs: tuple[str, ...]
    roles: tuple[str | None, ...]
    weights: tuple[float, ...]
    densities: tuple[float, ...]
    base: str | None = None  # the recipe's base_model


def refuse_base(name: str) -> Callable[[Any, MethodContext], None]:
    """A `check` for methods that merge the listed models only: a `base_model` would be ignored, so refuse it."""

    def check(params: Any, ctx: MethodContext) -> None:
        if ctx.base is not None:
            raise ValueError(
                f"{name} merges the listed models without a base here; remove base_model "
                "(mergekit's task-vector form of it, relative to a base, is not implemented)"
            )

    return check


class Merger:
    """A method bound to its parameters and inputs; the engine calls it tensor by tensor.

    Attributes:
        scans: whole-model passes to run before merging (0 for most methods).
    """

    scans: int = 0

    def scan(self, step: int, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None) -> None:
        """Look at one tensor during whole-model pass `step` (only called when `scans > 0`)."""
        raise NotImplementedError

    def end_scan(self, step: int) -> None:
        """Called after every tensor was scanned in pass `step`."""

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Merge one tensor (inputs in any float dtype); add diagnostics to `stats` when given.

        The result is a new fp32 tensor, or `out` itself: a buffer of the output dtype and the
        inputs' shape that a method may write its result into when that gives exactly the bits of
        casting the fp32 result (the fused TIES kernel does, for bf16 and fp32 outputs). The
        engine recycles `out` buffers, so no fresh memory is touched per tensor.
        """
        raise NotImplementedError


class FnMerger(Merger):
    """A `Merger` for a plain per-tensor function `fn(tensors, base, *, stats, **keywords)`."""

    def __init__(self, fn: Callable[..., torch.Tensor], **keywords: Any) -> None:
        self.fn, self.keywords = fn, keywords
        self.takes_out = "out" in inspect.signature(fn).parameters

    def merge(
        self,
        name: str,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        stats: TensorStats | None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.takes_out and out is not None:
            return self.fn(tensors, base, stats=stats, out=out, **self.keywords)
        return self.fn(tensors, base, stats=stats, **self.keywords)


def _no_check(params: Any, ctx: MethodContext) -> None:
    return None


def _no_protected(params: Any, ctx: MethodContext) -> tuple[int, ...]:
    return ()


def _no_description(params: Any, ctx: MethodContext) -> str | None:
    return None


@dataclass(frozen=True)
class MethodSpec:
    """What the recipe, the planner and the engine know about a method.

    Attributes:
        name: the recipe id (`merge_method`).
        summary: one line for `--help` and model cards.
        params: the frozen pydantic model of the method's top-level `parameters`.
        bind: `(params, ctx) -> Merger`.
        fn: the per-tensor function (`fn(tensors, base, *, weights, densities, normalize, lambda_,
            stats, ...)`), for tests and callers that merge single tensors.
        needs_base: the method takes a base tensor (task vectors are relative to it).
        uses_density: per-input `density` is meaningful.
        uses_weight: per-input `weight` is meaningful.
        min_inputs / max_inputs: how many non-base inputs it merges (None: no upper bound).
        default_normalize / default_lambda: what `normalize` / `lambda` default to (mergekit's).
        check: cross-field checks on (params, ctx); raises ValueError saying what to write.
        protected: the protected input indices (diagnostics report what the election took from them).
        describe: one line of method parameters for `--dry-run`, or None.
        diagnostics: which `TensorStats` fields the method fills in.
        reference: the paper or page the method follows.
    """

    name: str
    summary: str
    params: type[MethodParams]
    bind: Callable[[Any, MethodContext], Merger]
    fn: Callable[..., torch.Tensor]
    needs_base: bool = True
    uses_density: bool = False
    uses_weight: bool = True
    min_inputs: int = 1
    max_inputs: int | None = None
    default_normalize: bool = False
    default_lambda: float = 1.0
    check: Callable[[Any, MethodContext], None] = _no_check
    protected: Callable[[Any, MethodContext], tuple[int, ...]] = _no_protected
    describe: Callable[[Any, MethodContext], str | None] = _no_description
    diagnostics: tuple[str, ...] = field(default=("elements", "kept"))
    reference: str = ""

    def normalize(self, params: Any) -> bool:
        """`params.normalize`, or this method's default when the recipe leaves it out."""
        value = getattr(params, "normalize", None)
        return self.default_normalize if value is None else bool(value)

    def lambda_(self, params: Any) -> float:
        """`params.lambda_`, or this method's default when the recipe leaves it out."""
        value = getattr(params, "lambda_", None)
        return self.default_lambda if value is None else float(value)


def protected_by_role(params: Any, ctx: MethodContext) -> tuple[int, ...]:
    """`params.protect` (model references) as input indices; default: every input with role `sft`."""
    protect = getattr(params, "protect", None)
    if protect is not None:
        return tuple(ctx.refs.index(ref) for ref in protect if ref in ctx.refs)
    return tuple(i for i, role in enumerate(ctx.roles) if role == "sft")


def check_protect(params: Any, ctx: MethodContext) -> None:
    """Every `params.protect` entry must be an input.

    Raises:
        ValueError: names the bad entry and the valid ones.
    """
    for ref in getattr(params, "protect", None) or ():
        if ref not in ctx.refs:
            raise ValueError(f"protect lists {ref!r}, which is not an input; write one of {list(ctx.refs)}")
