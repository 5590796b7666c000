"""Plan a merge: resolve the inputs, run every compatibility check, and list what to compute.

Nothing here computes a merge. `plan_merge` reads configs and safetensors headers only;
`scan_inputs` adds the checks that need tensor data (NaN/Inf, same base), which the engine also
runs inline, before the output is moved into place. Inputs are resolved by
`registry.merge.sources`; with `offline=True` (dry runs) only the local cache is used and
unresolved inputs are reported as skipped instead of failing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import CompatibilityError
from registry.io.checkpoint import Checkpoint
from registry.io.safetensors import FLOAT_DTYPES
from registry.merge.sources import ModelSource, StitchPart, adapters_on_base, open_source, resolve_source

if TYPE_CHECKING:
    from registry.hub import HubClient
    from registry.merge.methods import MethodContext, MethodParams
    from registry.merge.recipe import Recipe

_ARCH_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)
_SAME_BASE_LIMIT = 1.0  # ||θ - θ0|| / ||θ0||: fine-tunes stay well below, unrelated inits are near √2

# The tokenizer files a checkpoint may carry (checked here, copied by `outputs`).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: name, output shape and dtype code, and how vocabulary rows combine."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    shared_rows: int | None = None  # vocab tensors: rows [0, shared_rows) merge ...
    extra_from: int | None = None  # ... and the rest come from this source index (tokenizer model)
    binding: int = 0  # index into `MergePlan.bindings`: this tensor's parameters (gradients, filters)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class MergePlan:
    """Everything the engine needs. `sources[0]` is the base when the method has one."""

    recipe: Recipe
    sources: list[ModelSource]
    base_index: int | None
    input_indices: list[int]  # sources of the method's non-base inputs, in recipe order
    tokenizer_index: int
    tensors: list[TensorPlan] = field(default_factory=list)
    # The distinct (method parameters, inputs' weights/densities) the tensors use; one unless the
    # recipe has gradient or `filter:` values.
    bindings: list[tuple[MethodParams, MethodContext]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    # With `slices:`, `sources` are the engine's input slots (stitched layers of several models) and
    # `models` the resolved models themselves (for the card); otherwise empty (= `sources`).
    models: list[ModelSource] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks not run, with the reason
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every input was resolved and every header-level check ran."""
        return not self.skipped

    def describe(self) -> str:
        """A human summary of the plan (for `--dry-run`)."""
        recipe = self.recipe
        lines = [f"method: {recipe.merge_method}   dtype: {recipe.output_dtype() or 'as base'}"]
        for i, src in enumerate(self.sources):
            role = "base" if i == self.base_index else ("input" if i in self.input_indices else "tokenizer")
            where = str(src.path) if src.path else "(not resolved)"
            rev = f" @ {src.commit[:12]}" if src.commit else ""
            lines.append(f"  {role:9s} {src.ref}{rev}  ->  {where}")
        from registry.merge.methods import get_method

        spec = get_method(recipe.merge_method)
        line = "  "
        if spec.uses_weight:
            line += f"weights {list(recipe.weights())}  "
        if spec.uses_density:
            line += f"densities {list(recipe.densities())}"
        if line.strip():
            lines.append(line.rstrip())
        extra = spec.describe(recipe.parameters, recipe.method_context())
        if extra:
            lines.append(f"  {extra}")
        if self.tensors:
            total = sum(t.numel for t in self.tensors)
            vocab = [t.name for t in self.tensors if t.extra_from is not None]
            lines.append(
                f"  {len(self.tensors)} tensors, {total:,} parameters"
                + (f"; extended vocabulary in {', '.join(vocab)}" if vocab else "")
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


def plan_merge(
    recipe: Recipe, *, offline: bool = False, remote_headers: bool = False, hub: HubClient | None = None
) -> MergePlan:
    """Resolve inputs and run every header-level compatibility check.

    Args:
        recipe: a validated recipe.
        offline: dry-run mode: Hub inputs only from the local cache; missing ones are skipped.
        remote_headers: with `offline`, read config, tokenizer and safetensors headers of uncached
            Hub inputs over the network (a few MB) instead of skipping their checks.
        hub: the Hub client for Hub inputs (None: one from HF_ENDPOINT / HF_TOKEN).

    Returns:
        The plan; `plan.skipped` lists the checks that could not run.

    Raises:
        CompatibilityError, CheckpointError, HubError: the first problem found.
    """
    refs, base_index, input_indices = _model_refs(recipe)
    tok_ref = recipe.tokenizer_model() or refs[0]
    sources: list[ModelSource] = []
    for ref in refs:  # once the Hub proved unreachable, the other inputs come from the cache without retrying
        cache_only = any(s.from_cache for s in sources)
        sources.append(resolve_source(ref, offline=offline, hub=hub, cache_only=cache_only))
    sources = adapters_on_base(sources, base_index)
    plan = MergePlan(
        recipe=recipe,
        sources=sources,
        base_index=base_index,
        input_indices=input_indices,
        tokenizer_index=refs.index(tok_ref),
    )
    missing = [i for i, s in enumerate(sources) if s.path is None]
    if recipe.slices is not None:
        if missing:
            plan.skipped.append(
                f"{', '.join(sources[i].ref for i in missing)} not in the local Hub cache: the recipe is valid, but "
                "the checks of a slices merge need the models (a real merge downloads them and runs every check)"
            )
            return plan
        _stitch_slots(plan, dict(zip(refs, sources, strict=True)), tok_ref)
    if missing and not remote_headers:
        plan.skipped.append(
            f"{', '.join(sources[i].ref for i in missing)} not in the local Hub cache: the recipe is valid, but "
            "architecture, tensor and vocabulary checks were skipped (--remote-checks reads them from the Hub; a "
            "real merge downloads the inputs and runs every check first)"
        )
        return plan
    remote = _remote_headers(plan, missing, hub)
    checkpoints = [remote[i].checkpoint if i in remote else open_source(s) for i, s in enumerate(plan.sources)]
    tok = plan.tokenizer_index
    tokenizer_json = remote[tok].tokenizer_json if tok in remote else plan.sources[tok].path / "tokenizer.json"  # type: ignore[operator]
    try:
        _check_plan(plan, checkpoints, tokenizer_json)
    finally:
        for ckpt in checkpoints:
            ckpt.close()
    _warn_without_tokenizer(plan, has_tokenizer=tokenizer_json.is_file() if tokenizer_json else tok in remote)
    return plan


def _stitch_slots(plan: MergePlan, resolved: dict[str, ModelSource], tok_ref: str) -> None:
    """`slices:`: one engine input per slot, each the slot's sources stitched in output layer order."""
    recipe = plan.recipe
    slots = recipe.slice_slots()
    plan.models = list(plan.sources)
    plan.sources = []
    for k in range(len(slots[0])):
        parts, out = [], 0
        for sources in slots:
            src = sources[k]
            parts.append(StitchPart(resolved[src.model], src.layer_range[0], src.count, out))
            out += src.count
        refs = list(dict.fromkeys(p.source.ref for p in parts))
        label = (
            refs[0]
            if len(refs) == 1
            else " | ".join(f"{p.source.ref}[{p.in_start}:{p.in_start + p.count}]" for p in parts)
        )
        first = parts[0].source
        plan.sources.append(
            ModelSource(
                ref=label,
                path=first.path,
                repo_id=first.repo_id,
                revision=first.revision,
                commit=first.commit,
                adapter=first.adapter,
                stitch=tuple(parts),
            )
        )
    skip = 1 if plan.base_index is not None else 0
    plan.base_index = 0 if skip else None
    plan.input_indices = list(range(skip, len(plan.sources)))
    firsts = [src.model for src in slots[0]]
    if tok_ref not in firsts:
        raise CompatibilityError(
            f"with slices:, the tokenizer comes from a model of the first slice ({', '.join(firsts)}), not {tok_ref}; "
            "set tokenizer_source to one of them",
            model=tok_ref,
            reason="tokenizer",
        )
    plan.tokenizer_index = firsts.index(tok_ref)


def _model_refs(recipe: Recipe) -> tuple[list[str], int | None, list[int]]:
    """The distinct model references (base first, then the inputs, then the tokenizer's model),
    the base's index and each merge input's index."""
    refs: list[str] = []
    base_index = None
    if recipe.base_model is not None:
        refs.append(recipe.base_model)
        base_index = 0
    input_indices = []
    for entry in recipe.merge_inputs():
        if entry.model not in refs:
            refs.append(entry.model)
        input_indices.append(refs.index(entry.model))
    tok_ref = recipe.tokenizer_model() or refs[0]
    if tok_ref not in refs:
        refs.append(tok_ref)
    return refs, base_index, input_indices


def needs_hub(recipe: Recipe) -> bool:
    """Whether some model reference is not a local directory (so a Hub client is worth building)."""
    refs, _, _ = _model_refs(recipe)
    return not all(Path(part).expanduser().is_dir() for ref in refs for part in ref.split("+"))


def _warn_without_tokenizer(plan: MergePlan, *, has_tokenizer: bool) -> None:

    src = plan.sources[plan.tokenizer_index]
    if has_tokenizer or (src.path is not None and any((src.path / n).is_file() for n in TOKENIZER_FILES)):
        return
    with_one = [s.ref for s in plan.sources if s.path is not None and (s.path / "tokenizer.json").is_file()]
    fix = (
        f"set tokenizer_source: {with_one[0]}"
        if with_one
        else "add one afterwards: AutoTokenizer.from_pretrained('<the base model on the Hub>').save_pretrained(OUT)"
    )
    plan.warnings.append(f"{src.ref} has no tokenizer files, so the merged model will have none; {fix}")


def _remote_headers(plan: MergePlan, missing: list[int], hub: HubClient | None) -> dict[int, Any]:
    if not missing:
        return {}
    from dataclasses import replace

    from registry.hub import HubClient
    from registry.merge.remote import fetch_headers

    client = hub or HubClient()
    remote = {}
    for i in missing:
        src = plan.sources[i]
        remote[i] = fetch_headers(src.repo_id, src.revision, hub=client)  # type: ignore[arg-type]
        plan.sources[i] = replace(src, commit=remote[i].commit)
    names = ", ".join(plan.sources[i].ref for i in missing)
    plan.skipped.append(
        f"data checks (NaN/Inf, same base) for {names}: they need the weights and run during "
        "the merge; headers were read from the Hub"
    )
    return remote


def _check_plan(plan: MergePlan, ckpts: list[Checkpoint], tokenizer_json: Path | None) -> None:
    labels = [s.ref for s in plan.sources]
    ref = plan.base_index if plan.base_index is not None else plan.input_indices[0]
    ref_cfg = ckpts[ref].config
    for i, ckpt in enumerate(ckpts):
        for key in _ARCH_KEYS:
            # A key only one config spells out (head_dim, num_key_value_heads in older saves) is not
            # a difference; tensor shapes catch any real one below.
            if key in ref_cfg and key in ckpt.config and ref_cfg[key] != ckpt.config[key]:
                raise CompatibilityError(
                    f"{labels[i]} has {key}={ckpt.config.get(key)!r} but {labels[ref]} has {ref_cfg.get(key)!r}: "
                    "different architectures cannot be merged; use fine-tunes of the same base",
                    model=labels[i],
                    reason=key,
                )
    ref_names = set(ckpts[ref].tensors)
    for i, ckpt in enumerate(ckpts):
        names = set(ckpt.tensors)
        missing, extra = sorted(ref_names - names), sorted(names - ref_names)
        if missing or extra:
            tied = [ckpts[j].config.get("tie_word_embeddings") for j in (ref, i)]
            hint = " (tied vs untied embeddings)" if tied[0] != tied[1] else ""
            what = f"lacks {missing[0]!r}" if missing else f"has extra tensor {extra[0]!r}"
            count = len(missing) + len(extra)
            raise CompatibilityError(
                f"{labels[i]} {what} compared with {labels[ref]}{hint} ({count} tensor names differ); "
                "merge only checkpoints of the same architecture",
                model=labels[i],
                tensor=(missing or extra)[0],
            )
    vocab = [c.config.get("vocab_size") for c in ckpts]
    out_dtype = plan.recipe.output_dtype()
    from registry.io.safetensors import dtype_code

    for name in sorted(ref_names):
        infos = [c.tensors[name] for c in ckpts]
        for i, info in enumerate(infos):
            if info.dtype not in FLOAT_DTYPES:
                raise CompatibilityError(
                    f"{labels[i]}: tensor {name!r} has dtype {info.dtype}; only float tensors (F32, F16, BF16, F64) "
                    "can be merged; dequantize the checkpoint first",
                    model=labels[i],
                    tensor=name,
                )
        code = dtype_code(_torch_dtype(out_dtype)) if out_dtype else infos[ref].dtype
        shapes = [info.shape for info in infos]
        if all(s == shapes[ref] for s in shapes):
            plan.tensors.append(TensorPlan(name, shapes[ref], code))
            continue
        is_vocab = all(
            len(s) == len(shapes[ref]) and s[1:] == shapes[ref][1:] and s[0] == vocab[i] for i, s in enumerate(shapes)
        )
        if not is_vocab:
            bad = next(i for i, s in enumerate(shapes) if s != shapes[ref])
            raise CompatibilityError(
                f"tensor {name!r}: {labels[bad]} has shape {list(shapes[bad])} but {labels[ref]} has "
                f"{list(shapes[ref])}; merge only checkpoints of the same architecture",
                model=labels[bad],
                tensor=name,
            )
        tok = plan.tokenizer_index
        used = [plan.base_index] if plan.base_index is not None else []
        used += plan.input_indices
        shared = min(shapes[i][0] for i in used + [tok])
        rows = shapes[tok][0]
        dropped = [labels[i] for i in used if shapes[i][0] > rows]
        if dropped:
            plan.warnings.append(
                f"{name}: rows beyond {rows} of {', '.join(dropped)} are dropped "
                f"(the tokenizer of {labels[tok]} has no ids for them)"
            )
        plan.tensors.append(TensorPlan(name, (rows, *shapes[ref][1:]), code, shared_rows=shared, extra_from=tok))
    _finish_config(plan, ckpts, tokenizer_json)
    bind_tensors(plan)


def bind_tensors(plan: MergePlan) -> None:
    """Resolve gradient and `filter:` parameters per tensor (mergekit's rules, `registry.merge.settings`)
    and give each tensor the index of its distinct parameter set in `plan.bindings`.

    Raises:
        RecipeError: a resolved value the method refuses; CompatibilityError: per-tensor values with
            a method that scans the whole model first.
    """
    from dataclasses import replace

    from registry.merge.settings import gradient_t, is_pre_weight, layer_index

    recipe = plan.recipe
    plan.bindings = [(recipe.parameters, recipe.method_context())]
    if not recipe.has_tensor_parameters():
        return
    layers = plan.config.get("num_hidden_layers")
    layout = recipe.slice_layout() if recipe.slices is not None else None
    plan.bindings = []
    seen: dict[str, int] = {}
    for i, t in enumerate(plan.tensors):
        if layout is None:
            params, ctx = recipe.tensor_parameters(t.name, gradient_t(t.name, layers))
        else:
            index = layer_index(t.name)
            if index is None:  # mergekit: embeddings with the first slice, norm and head with the last, t = 0
                where, at = (0 if is_pre_weight(t.name) else layout[-1][0]), 0.0
            else:
                where, position, count = layout[index]
                at = position / (count - 1) if count > 1 else 1.0
            params, ctx = recipe.tensor_parameters(t.name, at, where)
        key = json.dumps([params.model_dump(mode="json"), ctx.weights, ctx.densities], sort_keys=True)
        if key not in seen:
            seen[key] = len(plan.bindings)
            plan.bindings.append((params, ctx))
        plan.tensors[i] = replace(t, binding=seen[key])
    from registry.merge.methods import get_method

    spec = get_method(recipe.merge_method)
    if len(plan.bindings) > 1 and spec.bind(*plan.bindings[0]).scans:
        raise CompatibilityError(
            f"{recipe.merge_method} with these parameters looks at the whole model before merging, which "
            "per-tensor (gradient or filter) values cannot share; give one value, or use slack_scope: tensor",
            reason="settings",
        )


def _finish_config(plan: MergePlan, ckpts: list[Checkpoint], tokenizer_json: Path | None) -> None:
    ref = plan.base_index if plan.base_index is not None else plan.input_indices[0]
    config = dict(ckpts[ref].config)
    vocab_rows = [t.shape[0] for t in plan.tensors if t.extra_from is not None]
    if vocab_rows:
        config["vocab_size"] = vocab_rows[0]
    out_dtype = plan.recipe.output_dtype()
    if out_dtype:
        config["dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"] = out_dtype
    config.pop("_name_or_path", None)
    config.pop("auto_map", None)  # never code in the output (registry.merge.outputs)
    plan.config = config
    size = tokenizer_size(tokenizer_json) if tokenizer_json else None
    if size is not None and size > config.get("vocab_size", size):
        raise CompatibilityError(
            f"the tokenizer of {plan.sources[plan.tokenizer_index].ref} has {size} ids but the merged embedding has "
            f"{config['vocab_size']} rows; set tokenizer_source to the model whose vocabulary matches",
            model=plan.sources[plan.tokenizer_index].ref,
            reason="vocabulary",
        )


def tokenizer_size(file: Path) -> int | None:
    """The number of ids in a `tokenizer.json` file (vocab + added tokens), or None without one."""
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        ids = set((data.get("model") or {}).get("vocab", {}).values())
        ids |= {t["id"] for t in data.get("added_tokens") or []}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return (max(ids) + 1) if ids else None


def scan_inputs(plan: MergePlan, *, progress: bool = False) -> None:
    """The data checks: no NaN/Inf in any input tensor, and every input is a fine-tune of the base.

    Raises:
        CompatibilityError: names the model and tensor.
    """
    from registry.progress import progress_bar

    paths = [s.path for s in plan.sources]
    if any(p is None for p in paths):
        return
    ckpts = [open_source(s) for s in plan.sources]
    try:
        for t in progress_bar(plan.tensors, desc="scan", unit="tensor", enabled=progress):
            for i, ckpt in enumerate(ckpts):
                check_finite(ckpt.read(t.name), model=plan.sources[i].ref, name=t.name)
        check_same_base(plan, ckpts)
    finally:
        for ckpt in ckpts:
            ckpt.close()


def check_finite(tensor: Any, *, model: str, name: str) -> None:
    """Refuse a tensor holding NaN or Inf.

    Raises:
        CompatibilityError: names the model, the tensor and how many entries are bad.
    """
    import torch

    from registry.merge.kernels import fused

    # bf16/fp32 on CPU: the exponent bits counted in one vectorized pass. Otherwise one reduction
    # instead of an elementwise mask: NaN and Inf propagate through a sum. A sum can also overflow
    # on finite values, so a non-finite sum is confirmed elementwise.
    if tensor.numel() == 0 or fused.count_nonfinite(tensor) == 0 or bool(torch.isfinite(tensor.sum())):
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise CompatibilityError(
            f"{model}: tensor {name!r} holds {bad} NaN/Inf values; the checkpoint is corrupt or diverged, "
            "use another checkpoint",
            model=model,
            tensor=name,
            reason="nan",
        )


def check_same_base(plan: MergePlan, ckpts: list[Checkpoint]) -> None:
    """Each input must be close to the base on one probe matrix (fine-tunes are; unrelated models are not).

    Raises:
        CompatibilityError: an input that does not look like a fine-tune of the base.
    """
    if plan.base_index is None:
        return
    probes = [t for t in plan.tensors if len(t.shape) == 2 and t.extra_from is None]
    if not probes:
        return
    probe = min(probes, key=lambda t: (t.numel, t.name))
    base = ckpts[plan.base_index].read(probe.name).float()
    norm = float(base.norm()) or 1.0
    for i in plan.input_indices:
        distance = float((ckpts[i].read(probe.name).float() - base).norm()) / norm
        if distance > _SAME_BASE_LIMIT:
            raise CompatibilityError(
                f"{plan.sources[i].ref} does not look like a fine-tune of {plan.sources[plan.base_index].ref}: "
                f"on {probe.name} it differs by {distance:.2f}x the base's norm (fine-tunes stay below "
                f"{_SAME_BASE_LIMIT}); set base_model to the model it was trained from",
                model=plan.sources[i].ref,
                tensor=probe.name,
                reason="base",
            )


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
