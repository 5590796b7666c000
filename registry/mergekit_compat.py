"""mergekit compatibility: the mergekit features Mergeling does not implement, refused by name.

Every method mergekit 0.1.5 registers runs here (docs/merge.md has the parity table), and gradient
and `filter:` parameter values (`registry.merge.settings`); anything else mergekit understands
(modules, token surgery, chat templates, chained LoRA references, other methods'
parameters, methods of later mergekit versions) is an error that names the feature, never
silently ignored.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from registry.errors import UnsupportedFeatureError

# Keys we know but do not implement: refused with these explanations.
_UNSUPPORTED_TOP = {
    "modules": "per-module configurations are not supported; list whole models under `models:`",
    "tokenizer": "the `tokenizer:` block (token surgery) is not supported; use `tokenizer_source: base|ct|<model>`",
    "chat_template": "`chat_template` is not supported; the tokenizer of `tokenizer_source` is copied as is",
}
_UNSUPPORTED_PARAMS = {
    "rescale": "DARE rescaling",
    "epsilon": "DELLA",
    "gamma": "magnitude outliers",
    "t": "SLERP",
    "select_topk": "SCE",
    "k": "model stock",
    "filter_wise": "model stock",
}
MERGEKIT_METHODS = frozenset(
    {
        "core_space",
    }
)


def refuse_unsupported(data: dict[str, Any], source: str, *, accepted: Collection[str] = ()) -> None:
    """Refuse, by name, any mergekit feature Mergeling does not implement.

    Args:
        data: the recipe as parsed YAML (overrides applied), before validation.
        source: where it came from (the file name), for the message.
        accepted: parameter names the recipe's method declares (not refused here).

    Raises:
        UnsupportedFeatureError: names the dotted field, the feature and what to write instead.
    """
    for key, why in _UNSUPPORTED_TOP.items():
        if key in data:
            raise UnsupportedFeatureError(f"{source}: `{key}`: {why}", path=source, field=key, value=data[key])
    if data.get("tokenizer_source") == "union":
        raise UnsupportedFeatureError(
            f"{source}: tokenizer_source: union (merged vocabularies) is not supported; "
            "write base, ct, sft or a model reference",
            path=source,
            field="tokenizer_source",
            value="union",
        )
    blocks: list[tuple[str, Any]] = [("parameters", data.get("parameters"))]
    refs: list[tuple[str, Any]] = [("base_model", data.get("base_model"))]
    models = data.get("models")
    if isinstance(models, list):
        for i, entry in enumerate(models):
            if isinstance(entry, dict):
                blocks.append((f"models.{i}.parameters", entry.get("parameters")))
                refs.append((f"models.{i}.model", entry.get("model")))
    for field, ref in refs:
        if isinstance(ref, str) and (ref.count("+") > 1 or ref.startswith("+") or ref.endswith("+")):
            raise UnsupportedFeatureError(
                f"{source}: {field} = {ref!r}: a LoRA reference is model+lora, one model and one adapter; "
                "merge further adapters into the model first (peft merge_and_unload) and give its path",
                path=source,
                field=field,
                value=ref,
            )
    for where, params in blocks:
        if not isinstance(params, dict):
            continue
        for name, value in params.items():
            field = f"{where}.{name}"
            if name in _UNSUPPORTED_PARAMS and name not in accepted:
                method = data.get("merge_method")
                raise UnsupportedFeatureError(
                    f"{source}: {field}: a {_UNSUPPORTED_PARAMS[name]} parameter, not used by {method}; remove it",
                    path=source,
                    field=field,
                    value=value,
                )
