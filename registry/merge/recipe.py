"""Merge recipes: mergekit-style YAML plus a few Mergeling keys, validated by pydantic.

Lives in `registry.merge` because a recipe is validated by its method's own parameter model
(`registry.merge.methods`); `registry.recipe` re-exports it.

A plain mergekit config for `linear`, `task_arithmetic` or `ties` loads unchanged. mergekit
features we do not implement are refused by name, never ignored (`registry.mergekit_compat`). Every error is a
`RecipeError` naming the dotted field, the bad value and what to write instead.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from registry.catalog.entries import ModelRef
from registry.errors import RecipeError, UnknownMethodError
from registry.languages import check_language
from registry.merge.methods import METHODS, get_method
from registry.merge.methods.plugin import InputParams, MethodContext, MethodParams
from registry.merge.settings import Setting, evaluate, first_of, is_dynamic, leaves, parse_setting, to_plain
from registry.mergekit_compat import MERGEKIT_METHODS, refuse_unsupported

Role = Literal["ct", "sft", "base"]
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
# pydantic's type errors say what is wrong; these say what to write (by error type prefix).
_TYPE_HINTS = {
    "float": "; write a number, e.g. 0.5",
    "int": "; write a whole number",
    "bool": "; write true or false",
    "string": "; write it as text",
    "tuple": "; write a list (- item lines)",
    "dict": "; write a mapping (key: value lines)",
    "model_type": "; write a mapping (key: value lines)",
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ModelParameters(InputParams):
    """Per-input parameters (`models[].parameters`)."""


# The top-level `parameters` block is the method's own frozen model (`MethodSpec.params`); this is
# the base every method's model extends (weight/density defaults, int8_mask).
GlobalParameters = MethodParams


class ModelEntry(_Frozen):
    """One input (`models[]`): a local path or Hub repo id with optional `@revision`."""

    model: str = Field(min_length=1)
    role: Role | None = None
    language: str | None = None
    parameters: ModelParameters = ModelParameters()

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        return _check_reference(value)

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)


class SliceSource(_Frozen):
    """One source of an output slice (`slices[].sources[]`): a model's layers `[start, end)`."""

    model: str = Field(min_length=1)
    layer_range: tuple[int, int]
    parameters: ModelParameters = ModelParameters()

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        return _check_reference(value)

    @field_validator("layer_range")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] < value[1]:
            raise ValueError("layer_range is [start, end) with 0 <= start < end, e.g. [0, 24]")
        return value

    @property
    def count(self) -> int:
        return self.layer_range[1] - self.layer_range[0]


class SliceEntry(_Frozen):
    """One output slice (`slices[]`): its sources' layers merged by the method, in output order."""

    sources: tuple[SliceSource, ...] = Field(min_length=1)
    base_model: str | None = None
    parameters: SerializeAsAny[MethodParams] = MethodParams()

    @field_validator("base_model")
    @classmethod
    def _base_ref(cls, value: str | None) -> str | None:
        return None if value is None else _check_reference(value)


class ZeroSource(_Frozen):
    """`{kind: zero}`: a zero embedding row."""

    kind: Literal["zero"]


class TokenSource(_Frozen):
    """`tokens.<token>`: where its embedding row comes from for the inputs that lack it (every input
    with `force: true`): a model of the recipe (its row for that token) or `{kind: zero}`."""

    source: str | ZeroSource
    force: bool = False


class TokenizerBlock(_Frozen):
    """mergekit's `tokenizer:` block. `source`: `base`, a model reference or `model:<reference>`
    (the output vocabulary is that model's, as `tokenizer_source`); `tokens:` per-token embedding
    sources. `union`, `{kind: model_token}` and `pad_to_multiple_of` are refused by name
    (`registry.mergekit_compat`)."""

    source: str = Field(min_length=1)
    tokens: dict[str, TokenSource] | None = None


class SweepBlock(BaseModel):
    """`mergeling.sweep`: lists of values per parameter (e.g. `density`, `slack`) and the metric to pick by.

    Parameter names are the method's top-level parameters or the per-model `weight`/`density`;
    the recipe checks them against its method. `values()` gives the lists.
    """

    model_config = ConfigDict(frozen=True, extra="allow")
    __pydantic_extra__: dict[str, tuple[float, ...]] = Field(init=False)

    metric: str = Field(min_length=1)
    higher_is_better: bool = True

    def values(self) -> dict[str, tuple[float, ...]]:
        """Parameter name -> the values to sweep, in recipe order."""
        return dict(self.__pydantic_extra__ or {})

    def grid(self) -> list[dict[str, float]]:
        """Every point of the sweep (the product of the lists, first parameter slowest), as name -> value."""
        values = self.values()
        return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]


class MergelingBlock(_Frozen):
    """The `mergeling:` block: what the registry and the bot need."""

    output_repo: str | None = None
    eval_suite: str | None = None
    sweep: SweepBlock | None = None

    @field_validator("output_repo")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        if value is not None and not _REPO_ID.match(value):
            raise ValueError("output_repo is a Hub repo id: write e.g. my-org/Llama-2-7b-ben-ties-sv")
        return value


class ParameterSettings(_Frozen):
    """The gradient and `filter:` values of a recipe's parameters, by dotted place.

    Keys are `parameters.<name>` or `models.<i>.parameters.<name>`; the typed `parameters` hold
    a representative of each (its value at `t = 0` from the unfiltered default, else its first
    number), so checks and summaries see a number. `Recipe.tensor_parameters` resolves them per tensor.
    """

    values: dict[str, Setting] = {}


def _identity(value: Any) -> Any:
    return value


class Recipe(_Frozen):
    """A validated merge recipe."""

    merge_method: str
    base_model: str | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    slices: tuple[SliceEntry, ...] | None = None  # then `models` is derived: each model once, in order
    parameters: SerializeAsAny[MethodParams] = MethodParams()
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerBlock | None = None
    chat_template: str | None = None  # `auto`, or a Jinja template (written to the output tokenizer_config)
    mergeling: MergelingBlock = MergelingBlock()
    settings: ParameterSettings = Field(default=ParameterSettings(), exclude=True)

    @field_validator("base_model")
    @classmethod
    def _base_ref(cls, value: str | None) -> str | None:
        return None if value is None else _check_reference(value)

    @field_validator("chat_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or "{" in value:
            return value
        raise ValueError(
            "chat_template is `auto` (the template most inputs share) or a Jinja template such as "
            '"{% for message in messages %}...{% endfor %}"; named templates are not shipped here'
        )

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _dtype_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in _DTYPES:
            raise ValueError("dtype must be one of float32, bfloat16, float16")
        return _DTYPES[value]

    @model_validator(mode="before")
    @classmethod
    def _method_parameters(cls, data: Any) -> Any:
        # `parameters` is validated by the method's own model, so its errors and valid keys are the method's.
        if not isinstance(data, dict) or not isinstance(data.get("merge_method"), str):
            return data
        spec = METHODS.get(data["merge_method"])
        data = _derive_models(data)
        if spec is not None:
            data = _split_settings(data, spec.params)
        raw = data.get("parameters")
        if spec is None or (isinstance(raw, MethodParams) and isinstance(raw, spec.params)):
            return data
        if isinstance(raw, MethodParams):
            raw = raw.model_dump(by_alias=True, exclude_none=True)
        try:
            params = spec.params.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            errors = [
                InitErrorDetails(type=e["type"], loc=("parameters", *e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        data = {**data, "parameters": params}
        if isinstance(data.get("slices"), list):
            slices = []
            for j, entry in enumerate(data["slices"]):
                if isinstance(entry, dict) and isinstance(entry.get("parameters"), dict):
                    try:
                        entry = {**entry, "parameters": spec.params.model_validate(entry["parameters"])}
                    except ValidationError as exc:
                        errors = [
                            InitErrorDetails(
                                type=e["type"],
                                loc=("slices", j, "parameters", *e["loc"]),
                                input=e["input"],
                                ctx=e.get("ctx", {}),
                            )
                            for e in exc.errors()
                        ]
                        raise ValidationError.from_exception_data(cls.__name__, errors) from None
                slices.append(entry)
            data["slices"] = slices
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        method = self.merge_method
        spec = METHODS.get(method)
        if spec is None:  # parse_recipe refuses unknown ids first, with UnknownMethodError
            raise ValueError(f"unknown merge method; write one of {', '.join(sorted(METHODS))}")
        if spec.needs_base and self.base_model is None:
            raise ValueError(f"{method} needs `base_model:`; add the model the inputs were fine-tuned from")
        if self.slices is not None:
            self._check_slices()
        count = len(self.merge_inputs()) if self.slices is None else len(self.slice_slots()[0]) - self._slot_base()
        if count < spec.min_inputs:
            raise ValueError(f"{method} needs at least {spec.min_inputs} input models besides the base")
        if spec.max_inputs is not None and count > spec.max_inputs:
            raise ValueError(
                f"{method} merges the base and at most {spec.max_inputs} other model(s), got {count}; "
                "list fewer models or use merge_method: ties"
            )
        for key, used in (("density", spec.uses_density), ("weight", spec.uses_weight)):
            given = getattr(self.parameters, key) is not None or any(
                getattr(m.parameters, key) is not None for m in self.models
            )
            if given and not used:
                raise ValueError(f"{key} is not used by {method}; remove it or use merge_method: ties")
        spec.check(self.parameters, self.method_context())
        if self.mergeling.sweep is not None:
            self._check_sweep(spec.params)
        self.tokenizer_model()
        return self

    # -- slices (frankenmerges) ----------------------------------------------------------
    def _slot_base(self) -> int:
        """1 when slot 0 of every slice is the base model (methods that take one), else 0."""
        return 1 if self.slices is not None and METHODS[self.merge_method].needs_base else 0

    def _check_slices(self) -> None:
        spec = METHODS[self.merge_method]
        assert self.slices is not None
        for j, entry in enumerate(self.slices):
            if entry.base_model is not None and entry.base_model != self.base_model:
                raise ValueError(
                    f"slices.{j}.base_model: a base per slice is not supported; set the top-level base_model"
                )
            counts = {s.count for s in entry.sources}
            if len(counts) > 1:
                raise ValueError(
                    f"slices.{j}: every source of a slice spans the same number of layers (got {sorted(counts)}); "
                    "fix the layer_range values"
                )
            if spec.needs_base and self.base_model not in [s.model for s in entry.sources]:
                raise ValueError(
                    f"slices.{j}: {self.merge_method} needs the base_model {self.base_model} among the sources "
                    "of every slice; add it with the same layer_range"
                )
        sizes = {len(entry.sources) for entry in self.slices}
        if len(sizes) > 1:
            raise ValueError(
                f"slices: every slice has the same number of sources here (got {sorted(sizes)}); "
                "split the recipe into merges with one shape each"
            )

    def slice_slots(self) -> list[list[SliceSource]]:
        """Per output slice, its sources in slot order: the base first (methods with a base), then the
        others as listed. Slot k of every slice feeds the engine's input k."""
        assert self.slices is not None
        out = []
        for entry in self.slices:
            sources = list(entry.sources)
            if self._slot_base():
                base = next(s for s in sources if s.model == self.base_model)
                sources.remove(base)
                sources.insert(0, base)
            out.append(sources)
        return out

    def slice_layout(self) -> list[tuple[int, int, int]]:
        """Per output layer: (slice index, its layer index within the slice, the slice's layer count)."""
        assert self.slices is not None
        return [
            (j, i, entry.sources[0].count) for j, entry in enumerate(self.slices) for i in range(entry.sources[0].count)
        ]

    def _check_sweep(self, params: type[MethodParams]) -> None:
        sweep = self.mergeling.sweep
        assert sweep is not None
        names = {f.alias or n for n, f in params.model_fields.items()} - {"int8_mask"}
        for name, values in sweep.values().items():
            if name not in names:
                raise ValueError(
                    f"mergeling.sweep.{name}: not a parameter of {self.merge_method}; sweep one of {sorted(names)}"
                )
            if not values:
                raise ValueError(f"mergeling.sweep.{name}: an empty list; give at least one value")
            for value in values:
                try:
                    params.model_validate({name: value})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"mergeling.sweep.{name} = {value}: {reason}") from None

    # -- building in code ------------------------------------------------------------------
    @classmethod
    def from_parts(
        cls,
        *,
        method: str,
        models: Sequence[ModelEntry | Mapping[str, Any] | tuple[str, Mapping[str, Any]] | str],
        base: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        dtype: str | None = None,
        tokenizer_source: str | None = None,
        mergeling: MergelingBlock | Mapping[str, Any] | None = None,
        source: str = "<recipe>",
    ) -> Recipe:
        """The one way to build a recipe in code; validated exactly as a YAML file is.

        Args:
            method: the `merge_method` id, e.g. `ties_sv`.
            models: the inputs in order, each a `ModelEntry`, a mapping as in YAML
                (`{"model": ref, "role": "ct", "language": "ben_Beng", "parameters": {"density": 0.2}}`),
                a `(ref, parameters)` pair, or a bare reference.
            base: `base_model` (a local path or `org/name[@revision]`).
            parameters: the method's top-level parameters (`{"slack": 0.05, "lambda": 1.0}`).
            dtype: output dtype (`float32`, `bfloat16`, `float16`, or their short names).
            tokenizer_source: `base`, `ct`, `sft` or a model reference.
            mergeling: the `mergeling:` block (output_repo, eval_suite, sweep).
            source: how errors name the recipe (e.g. `bot recipe`, `Space merge`).

        Returns:
            The validated recipe.

        Raises:
            RecipeError, UnknownMethodError, UnsupportedFeatureError: as `parse_recipe`.
        """
        data: dict[str, Any] = {"merge_method": method, "models": [_model_data(m) for m in models]}
        if base is not None:
            data["base_model"] = base
        if parameters:
            data["parameters"] = dict(parameters)
        if dtype is not None:
            data["dtype"] = dtype
        if tokenizer_source is not None:
            data["tokenizer_source"] = tokenizer_source
        if mergeling is not None:
            data["mergeling"] = (
                mergeling.model_dump(mode="json", exclude_none=True)
                if isinstance(mergeling, MergelingBlock)
                else dict(mergeling)
            )
        return parse_recipe(data, source=source)

    def with_models(
        self,
        replacements: Mapping[str, str],
        *,
        base: str | None = None,
        languages: Mapping[str, str] | None = None,
        source: str = "<recipe>",
    ) -> Recipe:
        """This recipe as a template: the same method and parameters with other input models.

        Every occurrence of an old reference is replaced: in `models`, `base_model`, `protect` and
        `tokenizer_source`. The result is validated again.

        Args:
            replacements: old reference -> new reference (the base included). Each old one must
                occur in the recipe.
            base: the new `base_model` when the template names none (or to replace it outright).
            languages: new reference -> its `language` (e.g. for CT models put in place of a template's).
            source: how errors name the recipe.

        Raises:
            RecipeError: an old reference the recipe does not have, or a recipe that no longer validates.
        """
        data = self.canonical()
        present = {m.model for m in self.models} | ({data["base_model"]} if "base_model" in data else set())
        missing = [old for old in replacements if old not in present]
        if missing:
            raise RecipeError(
                f"{source}: {', '.join(map(repr, missing))} is not a model of this recipe; "
                f"replace one of {sorted(present)}",
                path=source,
                field="models",
                value=missing[0],
            )
        for model in data.get("models", []):
            model["model"] = replacements.get(model["model"], model["model"])
            if languages and model["model"] in languages:
                model["language"] = languages[model["model"]]
        for entry in data.get("slices", []):
            for src in entry["sources"]:
                src["model"] = replacements.get(src["model"], src["model"])
            if "base_model" in entry:
                entry["base_model"] = replacements.get(entry["base_model"], entry["base_model"])
        if "base_model" in data:
            data["base_model"] = replacements.get(data["base_model"], data["base_model"])
        if base is not None:
            data["base_model"] = base
        params = data.get("parameters") or {}
        if isinstance(params.get("protect"), list):
            params["protect"] = [replacements.get(ref, ref) for ref in params["protect"]]
        tokenizer = data.get("tokenizer_source")
        if isinstance(tokenizer, str):
            name = tokenizer.removeprefix("model:").strip()
            if name in replacements:
                data["tokenizer_source"] = replacements[name]
        block = data.get("tokenizer")
        if isinstance(block, dict) and isinstance(block.get("source"), str):
            name = block["source"].removeprefix("model:").strip()
            if name in replacements:
                block["source"] = replacements[name]
        return parse_recipe(data, source=source)

    def sweep_grid(self) -> list[dict[str, float]]:
        """The points of `mergeling.sweep` as name -> value (empty without a sweep); see `at_point`."""
        return [] if self.mergeling.sweep is None else self.mergeling.sweep.grid()

    def at_point(self, point: Mapping[str, float], *, source: str = "<recipe>") -> Recipe:
        """This recipe at one sweep point, without its sweep block.

        `weight` and `density` are set on every merged input (they override per-model values, as a
        sweep over them means); any other name is the method's top-level parameter.

        Raises:
            RecipeError: a value the method refuses.
        """
        data = self.canonical()
        (data.get("mergeling") or {}).pop("sweep", None)
        if not data.get("mergeling"):
            data.pop("mergeling", None)
        merged = {m.model for m in self.merge_inputs()}
        for name, value in point.items():
            if name in ("weight", "density") and self.slices is not None:
                for entry in data["slices"]:  # every merged source of every slice
                    for src in entry["sources"]:
                        if src["model"] != self.base_model or not self._slot_base():
                            src.setdefault("parameters", {})[name] = value
            elif name in ("weight", "density"):
                for model in data["models"]:
                    if model["model"] in merged:
                        model.setdefault("parameters", {})[name] = value
            else:
                data.setdefault("parameters", {})[name] = value
        return parse_recipe(data, source=source)

    def sweep_points(self) -> list[Recipe]:
        """One concrete recipe per point of `mergeling.sweep`, in `sweep_grid()` order (empty without one)."""
        return [self.at_point(point) for point in self.sweep_grid()]

    def replace(self, *, source: str = "<recipe>", **changes: Any) -> Recipe:
        """A copy with top-level fields changed (plain data, as in YAML), validated again.

        E.g. `recipe.replace(mergeling={"output_repo": "org/name"})`, `recipe.replace(parameters={...})`.
        A value of None removes the field.
        """
        data = self.canonical()
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            elif isinstance(value, BaseModel):
                data[key] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            else:
                data[key] = value
        return parse_recipe(data, source=source)

    # -- derived views -------------------------------------------------------------------
    def references(self) -> frozenset[str]:
        """Every model reference the merge reads: inputs, base, slice sources and bases, and the
        tokenizer's source and per-token sources (what a service must check before downloading)."""
        refs = {m.model for m in self.models} | ({self.base_model} if self.base_model else set())
        for entry in self.slices or ():
            refs |= {src.model for src in entry.sources} | ({entry.base_model} if entry.base_model else set())
        tokenizer = self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source
        if tokenizer is not None and tokenizer.removeprefix("model:").strip() not in ("base", "ct", "sft"):
            refs.add(tokenizer.removeprefix("model:").strip())
        for token in (self.tokenizer.tokens or {}).values() if self.tokenizer is not None else ():
            if isinstance(token.source, str):
                refs.add(token.source.removeprefix("model:").strip())
        return frozenset(refs)

    def merge_inputs(self) -> tuple[ModelEntry, ...]:
        """The non-base inputs in recipe order (an entry equal to `base_model` is the base)."""
        spec = METHODS.get(self.merge_method)
        if spec is not None and not spec.needs_base:  # no task vectors: every listed model is merged
            return self.models
        return tuple(m for m in self.models if m.model != self.base_model and m.role != "base")

    def protected_indices(self) -> tuple[int, ...]:
        """Indices into `merge_inputs()` of the models the method protects (ties_sv), in listed order."""
        return get_method(self.merge_method).protected(self.parameters, self.method_context())

    def method_context(self) -> MethodContext:
        """What the method sees of the inputs: references, roles, weights, densities (recipe order)."""
        inputs = self.merge_inputs()
        return MethodContext(
            refs=tuple(m.model for m in inputs),
            roles=tuple(m.role for m in inputs),
            weights=self.weights(),
            densities=self.densities(),
            base=self.base_model,
        )

    def weights(self) -> tuple[float, ...]:
        """Per-input weight: the model's own, else the top-level default, else 1.0."""
        default = self.parameters.weight if self.parameters.weight is not None else 1.0
        return tuple(m.parameters.weight if m.parameters.weight is not None else default for m in self.merge_inputs())

    def densities(self) -> tuple[float, ...]:
        """Per-input density: the model's own, else the top-level default, else 1.0 (mergekit)."""
        default = self.parameters.density if self.parameters.density is not None else 1.0
        return tuple(m.parameters.density if m.parameters.density is not None else default for m in self.merge_inputs())

    def output_dtype(self) -> str | None:
        """The output dtype name, or None to keep each tensor's dtype from the base."""
        return self.out_dtype or self.dtype

    def tokenizer_model(self) -> str | None:
        """The model reference whose tokenizer (and extra vocabulary rows) the output uses."""
        if self.tokenizer is not None and self.tokenizer_source is not None:
            raise ValueError("give either tokenizer_source or the tokenizer: block, not both (mergekit's rule)")
        source = self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source
        if source is not None and source.startswith("model:"):  # mergekit's spelling of a model reference
            source = source.removeprefix("model:").strip()
        if source in (None, "base"):
            return self.base_model or self.models[0].model
        if source in ("ct", "sft"):
            matches = [m.model for m in self.models if m.role == source]
            if len(matches) != 1:
                raise ValueError(
                    f"tokenizer_source: {source} needs exactly one input with role {source} (found {len(matches)});"
                    " name the model instead, e.g. tokenizer_source: " + (matches[0] if matches else "<model>")
                )
            return matches[0]
        refs = [m.model for m in self.models] + ([self.base_model] if self.base_model else [])
        if source not in refs:
            raise ValueError(
                f"tokenizer_source must be base, ct, sft or one of the inputs {refs} (optionally as model:<ref>)"
            )
        return source

    def languages(self) -> tuple[str, ...]:
        """Target languages of the CT inputs, in recipe order, without repeats."""
        return tuple(dict.fromkeys(m.language for m in self.models if m.language))

    def to_yaml(self) -> str:
        """Canonical YAML of the recipe (defaults left out)."""
        return yaml.safe_dump(self.canonical(), sort_keys=False, allow_unicode=True)

    def canonical(self) -> dict[str, Any]:
        """The recipe as plain data, defaults left out, aliases used (`lambda`); gradients and
        `filter:` lists in place, as written."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
        if self.slices is not None:
            data.pop("models", None)  # derived from the slices
        for path, setting in self.settings.values.items():
            node: Any = data
            *parents, name = path.split(".")
            for part in parents:
                if isinstance(node, list):
                    node = node[int(part)]
                else:
                    node = node.setdefault(part, {})
            node[name] = to_plain(setting)
        return data

    # -- per-tensor parameters -----------------------------------------------------------
    def has_tensor_parameters(self) -> bool:
        """Whether tensors may take different parameters: a gradient or `filter:` value, or `slices:`
        (each slice's sources and parameters are its tensors' inputs)."""
        return bool(self.settings.values) or self.slices is not None

    def tensor_parameters(
        self, name: str, t: float, slice_index: int | None = None
    ) -> tuple[MethodParams, MethodContext]:
        """The method's parameters and inputs' weights/densities for one tensor.

        Args:
            name: the tensor's name (filters are substrings of it).
            t: its gradient position (`registry.merge.settings.gradient_t`, or within its slice).
            slice_index: with `slices:`, the output slice the tensor belongs to (its sources are the inputs).

        Precedence as mergekit: a source's own value, then its slice's, then the top-level one,
        then the default; a `filter:` list that matches nothing passes on to the next.

        Raises:
            RecipeError: a resolved value the method refuses (names the tensor).
        """
        if not self.settings.values and self.slices is None:
            return self.parameters, self.method_context()
        spec = get_method(self.merge_method)
        settings = self.settings.values

        def place(prefix: str, block: BaseModel, key: str) -> Any:
            attr = next((n for n, f in type(block).model_fields.items() if (f.alias or n) == key), key)
            return settings.get(f"{prefix}.{key}", getattr(block, attr, None))

        shared: list[tuple[str, BaseModel]] = [("parameters", self.parameters)]
        if slice_index is not None:
            assert self.slices is not None
            shared.insert(0, (f"slices.{slice_index}.parameters", self.slices[slice_index].parameters))
        top: dict[str, Any] = {}
        for key in _param_names(spec.params):
            value = first_of([place(prefix, block, key) for prefix, block in shared], name, t, _identity)
            if value is not None:
                top[key] = value
        inputs: list[tuple[str, str, ModelParameters, str | None]]  # (place, model, params, role)
        if slice_index is None:
            inputs = [(f"models.{i}.parameters", m.model, m.parameters, m.role) for i, m in self._input_positions()]
        else:
            assert self.slices is not None
            entry = self.slices[slice_index]
            slots = self.slice_slots()[slice_index][self._slot_base() :]
            inputs = [
                (f"slices.{slice_index}.sources.{entry.sources.index(src)}.parameters", src.model, src.parameters, None)
                for src in slots
            ]
        per_input: dict[str, list[float]] = {"weight": [], "density": []}
        for prefix, _, own, _ in inputs:
            for key in per_input:
                chain = [place(prefix, own, key)] + [place(p, block, key) for p, block in shared]
                value = first_of(chain, name, t, _identity)
                per_input[key].append(float(1.0 if value is None else value))
        try:
            params = spec.params.model_validate(top)
            for key, values in per_input.items():
                for value in values:
                    ModelParameters.model_validate({key: value})
            ctx = MethodContext(
                refs=tuple(model for _, model, _, _ in inputs),
                roles=tuple(role for _, _, _, role in inputs),
                weights=tuple(per_input["weight"]),
                densities=tuple(per_input["density"]),
                base=self.base_model,
            )
            spec.check(params, ctx)
        except (ValidationError, ValueError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise RecipeError(
                f"tensor {name!r}: the gradient/filter values give {reason.removeprefix('Value error, ')}; "
                "change the values for this tensor",
                field="parameters",
                value=name,
            ) from None
        return params, ctx

    def _input_positions(self) -> list[tuple[int, ModelEntry]]:
        inputs = self.merge_inputs()
        out, start = [], 0
        for entry in inputs:
            index = next(i for i in range(start, len(self.models)) if self.models[i] is entry)
            out.append((index, entry))
            start = index + 1
        return out

    def recipe_hash(self) -> str:
        """sha256 of the canonical JSON: equal recipes hash equal, whatever the YAML layout."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def load_recipe(path: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the YAML file.
        overrides: `dotted.key=value` strings (values parsed as YAML), applied before validation;
            list items by index, e.g. `models.0.parameters.density=0.3`.

    Returns:
        The validated recipe.

    Raises:
        RecipeError: unreadable file, bad YAML, bad override or invalid content (names the field).
        UnknownMethodError: `merge_method` is not a Mergeling method.
        UnsupportedFeatureError: a mergekit feature Mergeling does not implement.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}; check the path", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise RecipeError(f"{path}: not valid YAML{line} ({problem}); fix the syntax", path=str(path)) from None
    return parse_recipe(data, overrides=overrides, source=str(path))


def parse_recipe(data: Any, *, overrides: list[str] | tuple[str, ...] = (), source: str = "<recipe>") -> Recipe:
    """Validate recipe data (already parsed YAML); see `load_recipe`."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with merge_method, models, ...", path=source)
    data = json.loads(json.dumps(data, default=str))  # deep copy, dates as strings
    for item in overrides:
        _apply_override(data, item, source)
    method = data.get("merge_method")
    if isinstance(method, str):
        if method not in METHODS:
            what = "a mergekit method Mergeling does not implement" if method in MERGEKIT_METHODS else "unknown"
            raise UnknownMethodError(
                f"{source}: merge_method {method!r} is {what}; write one of {', '.join(sorted(METHODS))}",
                path=source,
                field="merge_method",
                value=method,
                method=method,
                valid=sorted(METHODS),
            )
    spec = METHODS.get(method) if isinstance(method, str) else None
    refuse_unsupported(data, source, accepted=_param_names(spec.params) if spec else ())
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise _recipe_error(exc, data, source) from None


def _apply_override(data: dict[str, Any], item: str, source: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: write key=value, e.g. parameters.slack=0.1", path=source, value=item)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(
                    f"--set {item!r}: {'.'.join(parts[:i]) or 'recipe'} is a list of {len(node)}; "
                    f"use an index 0..{len(node) - 1}",
                    path=source,
                    field=key,
                    value=part,
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise RecipeError(
                f"--set {item!r}: {'.'.join(parts[:i])} is a value, not a mapping; set it directly",
                path=source,
                field=key,
                value=item,
            )


def _recipe_error(exc: ValidationError, data: dict[str, Any], source: str) -> RecipeError:
    messages: list[str] = []
    first_field, first_value = "", None
    # An unknown key is usually a typo (`densty`) that explains the other errors: say it first.
    errors = sorted(exc.errors(), key=lambda err: err["type"] != "extra_forbidden")
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "recipe"
        value = err.get("input")
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            parent = ".".join(loc[:-1])
            valid = _valid_keys(loc[:-1], data)
            owners = _methods_with(loc[-1]) if loc[:-1] == ["parameters"] else []
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            if owners:
                text = f"{loc[-1]} is a {' / '.join(owners)} parameter; remove it or use merge_method: {owners[0]}"
            else:
                guess = f" (did you mean `{close[0]}`?)" if close else ""
                text = (
                    f"unknown key `{loc[-1]}`"
                    + (f" in {parent}" if parent else "")
                    + f"{guess}; valid keys: {', '.join(valid)}"
                )
        elif kind == "too_short" and loc == ["models"]:
            if data.get("models"):
                continue  # the models are there; their own errors (above or below) say what is wrong
            text = "models: no input models; list them as `- model: org/name` lines under `models:`"
        elif kind == "missing":
            text = f"{field}: required; add it (see recipes/demo-tiny.yaml for an example)"
        elif kind == "literal_error":
            text = f"{field} = {value!r}: {msg}"
        else:
            hint = next((h for prefix, h in _TYPE_HINTS.items() if kind.startswith(prefix)), "")
            if kind == "string_type" and loc and loc[-1] in ("model", "base_model"):
                hint = "; write a local path or a Hub repo id such as org/name@main"
            text = (f"{field} = {_short(value)}: {msg}" if loc else msg) + hint
        if not messages:
            first_field, first_value = field, value
        messages.append(text)
    body = "; ".join(messages[:3]) + (f" (and {len(messages) - 3} more)" if len(messages) > 3 else "")
    return RecipeError(f"{source}: {body}", path=source, field=first_field, value=first_value)


def _param_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _methods_with(key: str) -> list[str]:
    """The methods whose top-level parameters include `key`."""
    return [name for name, spec in METHODS.items() if key in _param_names(spec.params)]


def _valid_keys(loc: list[str], data: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        if part.isdigit():
            continue
        if model is Recipe and part == "parameters" and data.get("merge_method") in METHODS:
            model = METHODS[data["merge_method"]].params
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))
        found = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if found is None:
            return []
        model = found
    return _param_names(model)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_data(model: ModelEntry | Mapping[str, Any] | tuple[str, Mapping[str, Any]] | str) -> dict[str, Any]:
    if isinstance(model, ModelEntry):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(model, str):
        return {"model": model}
    if isinstance(model, tuple):
        ref, params = model
        return {"model": ref, "parameters": dict(params)}
    return dict(model)


def _derive_models(data: dict[str, Any]) -> dict[str, Any]:
    """With `slices:`, `models` is each source model once, in order of appearance (never written)."""
    slices = data.get("slices")
    if slices is None:
        return data
    if "models" in data:
        raise ValueError("give either `models:` or `slices:`, not both (mergekit's rule)")
    if not isinstance(slices, list) or not slices:
        raise ValueError("slices: a list of {sources: [{model: ..., layer_range: [start, end]}]} entries")
    refs: list[str] = []
    for entry in slices:
        for src in (entry.get("sources") if isinstance(entry, dict) else None) or []:
            if isinstance(src, dict) and isinstance(src.get("model"), str) and src["model"] not in refs:
                refs.append(src["model"])
    return {**data, "models": [{"model": ref} for ref in refs]}


def _split_settings(data: dict[str, Any], params: type[MethodParams]) -> dict[str, Any]:
    """Move gradient and `filter:` values out of `parameters` (and each model's) into `settings`.

    Each is replaced in place by its value outside the layers (checked as any value would be),
    every number it holds is checked against the parameter's range, and the setting itself goes to
    `settings` (under its dotted place).

    Raises:
        ValueError: `settings` given in the recipe (not a recipe key), or a bad condition list.
    """
    if "settings" in data and not isinstance(data["settings"], ParameterSettings):
        raise ValueError("unknown key `settings`; parameters go under `parameters:`")
    found: dict[str, Setting] = {}
    data = dict(data)
    blocks: list[tuple[str, Any, type[BaseModel]]] = [("parameters", data.get("parameters"), params)]
    models = data.get("models")
    if isinstance(models, list):
        models = [dict(m) if isinstance(m, dict) else m for m in models]
        data["models"] = models
        for i, entry in enumerate(models):
            if isinstance(entry, dict):
                blocks.append((f"models.{i}.parameters", entry.get("parameters"), ModelParameters))
    slices = data.get("slices")
    if isinstance(slices, list):
        slices = [
            {**e, "sources": [dict(x) if isinstance(x, dict) else x for x in e.get("sources") or []]}
            if isinstance(e, dict)
            else e
            for e in slices
        ]
        data["slices"] = slices
        for j, entry in enumerate(slices):
            if not isinstance(entry, dict):
                continue
            blocks.append((f"slices.{j}.parameters", entry.get("parameters"), params))
            for k, src in enumerate(entry["sources"]):
                if isinstance(src, dict):
                    blocks.append((f"slices.{j}.sources.{k}.parameters", src.get("parameters"), ModelParameters))
    for where, block, model in blocks:
        if not isinstance(block, dict):
            continue
        block = dict(block)
        for name, value in list(block.items()):
            field = next((f for n, f in model.model_fields.items() if (f.alias or n) == name), None)
            if field is None or not is_dynamic(value) or _is_list_field(field.annotation):
                continue
            try:
                setting = parse_setting(value)
            except ValueError as exc:
                raise ValueError(f"{where}.{name}: {exc}") from None
            for leaf in leaves(setting):
                try:
                    model.model_validate({name: leaf})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"{where}.{name} holds {leaf!r}: {reason}") from None
            found[f"{where}.{name}"] = setting
            first = evaluate(setting, "", 0.0, _identity)
            block[name] = first if first is not None else leaves(setting)[0]
        parts = where.split(".")
        if where == "parameters":
            data["parameters"] = block
        elif parts[0] == "models":
            models[int(parts[1])]["parameters"] = block  # type: ignore[index]
        elif len(parts) == 3:
            slices[int(parts[1])]["parameters"] = block  # type: ignore[index]
        else:
            slices[int(parts[1])]["sources"][int(parts[3])]["parameters"] = block  # type: ignore[index]
    if found:
        data["settings"] = ParameterSettings(values=found)
    return data


def _is_list_field(annotation: Any) -> bool:
    args = getattr(annotation, "__args__", ())
    origin = getattr(annotation, "__origin__", None)
    return origin in (tuple, list) or any(_is_list_field(a) for a in args)


def _check_reference(value: str) -> str:
    _, revision = ModelRef.split(value)
    if revision is not None and "@" in revision:
        raise ValueError("a model reference has at most one @revision: write org/name@main or a local path")
    if "@" in value and revision is None:
        raise ValueError("empty @revision: write org/name@<branch, tag or commit> or drop the @")
    return value
