"""Resolve a recipe's model references: a local directory, else a Hub repo id fetched with
`snapshot_download` (weights in one format, config, tokenizer, generation config, README only).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.catalog.entries import ModelRef
from registry.errors import CompatibilityError, HubUnavailableError
from registry.io.checkpoint import Checkpoint

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from registry.hub import HubClient

HUB_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "README.md",
    "adapter_config.json",
]


@dataclass(frozen=True)
class ModelSource:
    """One resolved input: the recipe reference and where its files are."""

    ref: str
    path: Path | None  # None: a Hub input that was not resolved (offline dry run)
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None  # the Hub commit actually used
    adapter: Path | None = None  # a LoRA adapter applied on top of `path` (`model+lora`, or an adapter ref)
    from_cache: bool = False  # the Hub was unreachable: the cached snapshot was used
    stitch: tuple[StitchPart, ...] | None = None  # `slices:`: layers of several models, renumbered


@dataclass(frozen=True)
class StitchPart:
    """Layers `[in_start, in_start + count)` of a resolved model, as output layers from `out_start`."""

    source: ModelSource
    in_start: int
    count: int
    out_start: int


def open_source(src: ModelSource) -> Checkpoint:
    """Open a resolved source: its checkpoint, seen through its LoRA adapter when it has one.

    Raises:
        CheckpointError, CompatibilityError: unreadable weights or an unsupported adapter.
    """
    from registry.io.checkpoint import open_checkpoint

    if src.stitch is not None:
        return open_stitched(src)
    if src.path is None:
        raise CompatibilityError(f"model {src.ref!r} was not resolved", model=src.ref)
    if src.adapter is not None:
        from registry.io.lora import open_adapted

        return open_adapted(src.path, src.adapter)
    return open_checkpoint(src.path)


def resolve_source(
    ref: str, *, offline: bool = False, hub: HubClient | None = None, cache_only: bool = False
) -> ModelSource:
    """Resolve a model reference: an existing local directory, else a Hub repo id (`org/name@rev`).

    Args:
        ref: the recipe's reference.
        offline: use only the local Hub cache (no network); unresolved gives `path=None`.
        hub: the Hub client (endpoint, token, cache); None builds one from HF_ENDPOINT/HF_TOKEN.
        cache_only: the local cache only, and an error when it lacks the model (as HF_HUB_OFFLINE=1;
            set after another input found the Hub unreachable).

    Raises:
        CompatibilityError: neither an existing directory nor a Hub repo id.
        HubError: the Hub could not provide it (not found, no access, unreachable).
    """
    model_ref, plus, lora_ref = ref.partition("+")
    if plus:  # mergekit's `model+lora`: the adapter applied to that model
        model = resolve_source(model_ref, offline=offline, hub=hub, cache_only=cache_only)
        lora = resolve_source(lora_ref, offline=offline, hub=hub, cache_only=cache_only or model.from_cache)
        if model.path is None or lora.path is None:
            return ModelSource(ref=ref, path=None, repo_id=model.repo_id, revision=model.revision)
        return ModelSource(
            ref=ref,
            path=model.path,
            repo_id=model.repo_id,
            revision=model.revision,
            commit=model.commit,
            adapter=lora.path,
            from_cache=model.from_cache or lora.from_cache,
        )
    local = Path(ref).expanduser()
    if local.is_dir():
        return ModelSource(ref=ref, path=local.resolve())
    repo_id, revision = ModelRef.split(ref)
    if ref.startswith((".", "/", "~")) or repo_id.count("/") != 1:
        hint = "; `registry demo` builds the demo models there" if ".mergeling/demo/" in ref else ""
        raise CompatibilityError(
            f"model {ref!r}: no such directory (relative paths are resolved against {Path.cwd()}), and not a "
            f"Hub repo id (org/name); check the path{hint}",
            model=ref,
            reason="not found",
        )
    cache_dir = hub.cache_dir if hub else None
    if offline:
        path = _cached_snapshot(repo_id, revision or None, cache_dir=cache_dir)
    elif hub_offline() or cache_only:
        # HF_HUB_OFFLINE=1: the local cache only, as huggingface_hub does.
        path = _cached_snapshot(repo_id, revision or None, cache_dir=cache_dir)
        if path is None:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hub is unreachable"
            raise HubUnavailableError(
                f"model {ref!r}: {why} and it is not in the local Hub cache; "
                + ("unset HF_HUB_OFFLINE to download it" if hub_offline() else "check HF_ENDPOINT and the network"),
                repo_id=repo_id,
            )
    else:
        from registry.hub import HubClient

        client = hub or HubClient()
        try:
            # The snapshot is fetched by the given revision (not the listed commit), so the cache
            # records the branch and later dry runs find it offline.
            wanted = hub_files(client.list_files(repo_id, revision=revision or None))
            path = client.snapshot(repo_id, revision=revision or None, allow_patterns=wanted)
        except HubUnavailableError:
            # The Hub cannot be reached: a snapshot already in the cache will do (huggingface_hub's rule).
            path = _cached_snapshot(repo_id, revision or None, cache_dir=client.cache_dir)
            if path is None:
                raise
            log.warning("The Hub is unreachable: using the cached snapshot of %s (%s)", ref, path.name)
            cache_only = True
    commit = path.name if path is not None and len(path.name) == 40 else None
    return ModelSource(
        ref=ref, path=path, repo_id=repo_id, revision=revision or None, commit=commit, from_cache=cache_only
    )


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for the local cache only (read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_files(files: list[str]) -> list[str]:
    """The files of a Hub model repo a merge needs: root-level weights in ONE format (safetensors
    when present; repos such as Llama-2-7b-hf ship both), config, tokenizer, generation config, README.
    Never a `*.py` file (custom code: `tokenizer*` would match `tokenizer_xyz.py`).
    """
    from fnmatch import fnmatch

    root = [f for f in files if "/" not in f and not f.endswith(".py")]  # never code (`tokenizer*` matches *.py)
    safetensors = any(f.endswith(".safetensors") for f in root)
    wanted = []
    for name in root:
        if name.endswith((".safetensors", ".safetensors.index.json")):
            keep = safetensors
        elif name.endswith((".bin", ".bin.index.json")):
            keep = not safetensors and name.startswith("pytorch_model")
        else:
            keep = any(
                fnmatch(name, pattern)
                for pattern in HUB_PATTERNS
                if "safetensors" not in pattern and ".bin" not in pattern
            )
        if keep:
            wanted.append(name)
    return sorted(wanted)


def _cached_snapshot(repo_id: str, revision: str | None, *, cache_dir: Path | None) -> Path | None:
    # Dry runs never touch the network: only a snapshot already in the local cache counts.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # Only config.json is required here: huggingface_hub calls a cached snapshot incomplete
        # when a pattern matches a listed file it lacks (the unused weights format, for one);
        # open_checkpoint then checks that the weights are all there.
        for required in ("config.json", "adapter_config.json"):  # a model, or a LoRA adapter
            try:
                return Path(
                    snapshot_download(
                        repo_id,
                        revision=revision,
                        allow_patterns=[required],
                        local_files_only=True,
                        cache_dir=cache_dir,
                    )
                )
            except (LocalEntryNotFoundError, OSError, ValueError):
                continue
        return None
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def adapters_on_base(sources: list[ModelSource], base_index: int | None) -> list[ModelSource]:
    """An input that is a LoRA adapter (not `model+lora`) applies to the recipe's base, which must be its own.

    Raises:
        CompatibilityError: the adapter was trained on another base, or the recipe has none.
    """
    import json
    from dataclasses import replace

    from registry.io.lora import ADAPTER_CONFIG, is_adapter

    out = list(sources)
    for i, src in enumerate(sources):
        if src.path is None or src.adapter is not None or not is_adapter(src.path):
            continue
        try:
            trained_on = str(
                json.loads((src.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            trained_on = "?"
        base = sources[base_index] if base_index is not None else None
        if base is None or base.path is None or not _same_model(trained_on, base):
            where = f"the recipe's base_model is {base.ref}" if base else "the recipe has no base_model"
            raise CompatibilityError(
                f"{src.ref} is a LoRA adapter of {trained_on}, but {where}; merge adapters of the recipe's base, "
                f"or apply it to a model explicitly with {trained_on}+{src.ref}",
                model=src.ref,
                reason="adapter base",
            )
        out[i] = replace(src, path=base.path, adapter=src.path)
    return out


def _same_model(ref: str, src: ModelSource) -> bool:
    """Whether a reference (an adapter's `base_model_name_or_path`) names the resolved source `src`."""
    if ref == src.ref or (src.repo_id is not None and ModelRef.split(ref)[0] == src.repo_id):
        return True
    local = Path(ref).expanduser()
    return local.is_dir() and src.path is not None and local.resolve() == src.path.resolve()


def open_stitched(src: ModelSource) -> Checkpoint:
    """A slot of a `slices:` merge as one checkpoint (see `StitchedCheckpoint`).

    Raises:
        CompatibilityError: a layer_range beyond a model's layers.
    """
    assert src.stitch is not None
    opened: dict[tuple[Path | None, Path | None], Checkpoint] = {}
    parts: list[tuple[Checkpoint, StitchPart]] = []
    try:
        for part in src.stitch:
            key = (part.source.path, part.source.adapter)
            if key not in opened:
                opened[key] = open_source(part.source)
            parts.append((opened[key], part))
        return StitchedCheckpoint.build(src.ref, parts, list(opened.values()))
    except BaseException:
        for ckpt in opened.values():
            ckpt.close()
        raise


class StitchedCheckpoint(Checkpoint):
    """Output-named tensors of a frankenmerge slot: output layer `out_start + i` is layer
    `in_start + i` of its part's model (mergekit renumbers the same way); tensors outside the
    layers come from the first part (embeddings) or the last (final norm, head), as in mergekit."""

    names: dict[str, tuple[Checkpoint, str]]
    owned: list[Checkpoint]

    @classmethod
    def build(cls, ref: str, parts: list[tuple[Checkpoint, StitchPart]], owned: list[Checkpoint]) -> StitchedCheckpoint:
        from dataclasses import replace

        from registry.merge.settings import is_pre_weight, layer_index, rename_layer

        names: dict[str, tuple[Checkpoint, str]] = {}
        tensors = {}
        for number, (ckpt, part) in enumerate(parts):
            layers = ckpt.config.get("num_hidden_layers")
            if isinstance(layers, int) and part.in_start + part.count > layers:
                raise CompatibilityError(
                    f"{part.source.ref} has {layers} layers but a slice takes layers "
                    f"[{part.in_start}, {part.in_start + part.count}); fix its layer_range",
                    model=part.source.ref,
                    reason="layer_range",
                )
            for name, info in ckpt.tensors.items():
                index = layer_index(name)
                if index is None:
                    take = number == 0 if is_pre_weight(name) else number == len(parts) - 1
                    out = name if take else None
                elif part.in_start <= index < part.in_start + part.count:
                    out = rename_layer(name, part.out_start + index - part.in_start)
                else:
                    out = None
                if out is not None:
                    names[out] = (ckpt, name)
                    tensors[out] = replace(info, name=out)
        first = parts[0][0]
        total = sum(part.count for _, part in parts)
        config = {**first.config, "num_hidden_layers": total}
        view = cls(path=first.path, config=config, tensors=tensors, format=first.format)
        view.names, view.owned = names, owned
        return view

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        ckpt, real = self.names[name]
        return ckpt.read(real, out)

    def map(self, name: str) -> torch.Tensor:
        ckpt, real = self.names[name]
        return ckpt.map(real)

    def evict(self, name: str) -> None:
        ckpt, real = self.names[name]
        ckpt.evict(real)

    def close(self) -> None:
        for ckpt in self.owned:
            ckpt.close()
        self.owned = []
