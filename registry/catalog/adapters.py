"""PEFT LoRA adapters as CT checkpoints: what their adapter_config.json says, and which base they are on.

An adapter repo (`adapter_config.json` + `adapter_model.safetensors`, no weights of its own) is a CT
whose weights are its base's plus the low-rank update; the merge engine applies it to the recipe's
`base_model` (`registry.merge.sources.adapters_on_base`). The catalog records it with the adapter's
facts, takes the base from `base_model_name_or_path` and the shapes from the base's config.json.
Only what the engine merges is accepted: LoRA, without the variants `registry.io.lora` refuses.
"""

from __future__ import annotations

from typing import Any

from registry.catalog.entries import AdapterFacts, validate_repo_id
from registry.errors import CatalogError
from registry.io.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, REFUSED_OPTIONS


def adapter_facts(config: dict[str, Any], *, repo: str, shown: str, files: set[str]) -> AdapterFacts:
    """Check a parsed adapter_config.json and return the facts the catalog records.

    Args:
        config: the parsed adapter_config.json.
        repo: the adapter repo (for errors).
        shown: how the repo is named in messages (`repo@revision`).
        files: the files at the verified commit.

    Raises:
        CatalogError: not LoRA, a LoRA variant the engine refuses, no safetensors weights, or a
            `base_model_name_or_path` that is not a Hub repo id.
    """
    kind = str(config.get("peft_type") or "?")
    if kind != "LORA":
        raise CatalogError(
            f"cannot verify {shown}: adapter type {kind} is not supported (only LoRA adapters merge); merge it into "
            "its base with peft's merge_and_unload() and push the merged model",
            repo_id=repo,
            reason=f"adapter type {kind}",
        )
    for option, what in REFUSED_OPTIONS.items():
        if config.get(option):
            raise CatalogError(
                f"cannot verify {shown}: {what} is not supported; merge the adapter into its base with peft's "
                "merge_and_unload() and push the merged model",
                repo_id=repo,
                reason=option,
            )
    if ADAPTER_WEIGHTS not in files:
        raise CatalogError(
            f"cannot verify {shown}: a LoRA adapter without {ADAPTER_WEIGHTS}; re-save it with safetensors "
            "(peft save_pretrained(..., safe_serialization=True)) and push it",
            repo_id=repo,
            reason=f"no {ADAPTER_WEIGHTS}",
        )
    base = str(config.get("base_model_name_or_path") or "")
    try:
        validate_repo_id(base)
    except ValueError:
        raise CatalogError(
            f"cannot verify {shown}: its {ADAPTER_CONFIG} names base_model_name_or_path {base or '(empty)'!r}, "
            "not a Hub repo id; set it to the base model's repo (owner/name) and push the adapter again",
            repo_id=repo,
            reason="adapter base is not a repo id",
        ) from None
    try:
        return AdapterFacts(
            base_model_name_or_path=base,
            r=int(config.get("r") or 0),
            lora_alpha=float(config.get("lora_alpha") or 0),
            use_rslora=bool(config.get("use_rslora")),
            target_modules=_names(config.get("target_modules")),
            modules_to_save=_names(config.get("modules_to_save")),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogError(
            f"cannot verify {shown}: {ADAPTER_CONFIG} has no usable r / lora_alpha ({exc}); re-save the adapter",
            repo_id=repo,
            reason="adapter config",
        ) from None


def adapter_base(
    facts: AdapterFacts, config_revision: str | None, *, repo: str, base: str | None, base_revision: str | None
) -> tuple[str, str | None]:
    """The base an adapter CT is recorded on: its own, checked against the one given (`--base`).

    Args:
        facts: the adapter's facts.
        config_revision: the `revision` its adapter_config.json names for the base, if any.
        repo: the adapter repo.
        base: the base repo given by the user (None: take the adapter's).
        base_revision: the base revision given (None: the adapter config's, else the default branch).

    Raises:
        CatalogError: the given base is not the adapter's.
    """
    own = facts.base_model_name_or_path
    if base is not None and base != own:
        raise CatalogError(
            f"base mismatch: {repo} is a LoRA adapter of {own} ({ADAPTER_CONFIG} base_model_name_or_path), "
            f"not of {base}; pass --base {own} or leave --base out",
            repo_id=repo,
            reason="adapter base",
        )
    return own, base_revision or config_revision or None


def _names(value: Any) -> tuple[str, ...]:
    # target_modules may be a list, a single name, or a regex string; modules_to_save a list or null.
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(sorted(str(item) for item in value))
