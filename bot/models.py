"""What travels with a job: its spec (what to merge, fixed when it is paired) and its step data
(what each finished step recorded). Both are stored as JSON in the queue row and validated on the
way in and out, so an unknown or misspelt key fails where it is written, not three modules later.

`JobSpec.recipe` is the concrete recipe's data (it becomes `registry.recipe.Recipe` through
`parse_recipe` when the merge runs).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Member(BaseModel):
    """One CT of a merge, pinned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str
    sha: str
    language: str


class SweepSpec(BaseModel):
    """A grid of density x slack; the best point by `metric` on the dev split is promoted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    density: tuple[float, ...]
    slack: tuple[float, ...]
    metric: str  # "<task>/<metric>"
    higher_is_better: bool = True
    template: dict[str, Any]  # the recipe the points are made from


class JobSpec(BaseModel):
    """What one job merges (set when it is paired; empty for a trigger row)."""

    model_config = ConfigDict(extra="forbid")

    recipe: dict[str, Any] = {}
    recipe_source: str = "default"
    recipe_hash: str = ""
    ct_entry: str = ""
    sft_entry: str = ""
    base: str = ""  # repo@sha
    members: list[Member] = []
    private: bool = False  # a private or gated input: published private, no public trace
    sweep: SweepSpec | None = None
    point: dict[str, float] | None = None

    @property
    def base_repo(self) -> str:
        return self.base.partition("@")[0]

    @property
    def method(self) -> str:
        return str(self.recipe.get("merge_method", "ties_sv"))


class StepData(BaseModel):
    """What the finished steps recorded (each field set by one step; None until then)."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = None  # paired
    merged_dir: str | None = None  # merged (sweeps: the chosen point's, set when evaluated)
    merge_seconds: float | None = None
    points: dict[str, str] = {}  # sweep point name -> its staging folder
    eval_records: dict[str, str] = {}  # label (ct, sft, merge) -> record JSON text
    eval_unavailable: str | None = None
    # group merges: every member language's (ct, sft, merge) records, and why a language has none
    eval_by_language: dict[str, dict[str, str]] = {}
    eval_unavailable_by_language: dict[str, str] = {}
    eval_seconds: float | None = None
    best_point: str | None = None
    sweep_table: str | None = None
    sweep_dev: dict[str, str] = {}
    commit: str | None = None  # published
    publish_seconds: float | None = None
    discussion_url: str | None = None  # commented (or the failure comment)
    ray_node: str | None = None  # executor ray: the node that ran the last heavy step
    reasons: list[str] = []  # failed: per-pair reasons
