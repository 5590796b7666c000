"""What travels with a job: its spec (what to merge, fixed when it is paired) and its step data
(what each finished step recorded). Both are stored as JSON in the queue row and validated on the
way in and out, so an unknown or misspelt key fails where it is written, not three modules later.

`JobSpec.recipe` is the concrete recipe's data (it becomes `registry.recipe.Recipe` through
`parse_recipe` when the merge runs).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_RECIPE_TEXT = 64 * 1024  # a full recipe sent with POST /jobs: a short YAML file


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


class RecipeRequest(BaseModel):
    """A recipe sent with `POST /jobs` (what the Space's Merge tab shows): either parts, or a full recipe.

    Parts: `method` and its parameters (`density` and `weights` of the inputs, `slack` and any other
    top-level `parameters`); unset ones take the engine's defaults. `text`: a full recipe, YAML or
    JSON, with one `role: ct` and one `role: sft` model (and optionally `base_model`), whose
    references the bot replaces with the job's pinned CT, SFT and base. Either way the recipe is
    built and validated by the engine's `Recipe` (`bot.recipes.custom_recipe`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str | None = Field(default=None, min_length=1, max_length=64)
    density: float | None = None
    slack: float | None = None
    weights: dict[Literal["ct", "sft"], float] | None = None
    parameters: dict[str, float | int | bool | str] = Field(default_factory=dict, max_length=32)
    text: str | None = Field(default=None, min_length=1, max_length=MAX_RECIPE_TEXT)


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
    custom_recipe: RecipeRequest | None = None  # POST /jobs with a recipe (the trigger and its jobs carry it)

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
