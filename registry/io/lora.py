"""LoRA / PEFT adapters as merge inputs: the base's weights plus `scaling · B @ A`, one tensor at a time.

`open_adapted(base_dir, adapter_dir)` returns a `Checkpoint` whose tensors are the base's; reading
a tensor that the adapter targets returns base + scaling · B @ A (the transpose for embeddings and
`fan_in_fan_out` layers), computed in fp32 and stored in the base tensor's dtype, exactly what
peft's `merge_and_unload()` writes for an fp32 model. Tensors the adapter saves whole
(`modules_to_save`, an embedding's `base_layer`) replace the base's. Nothing is materialised
beyond the tensor being read.

peft reads `adapter_config.json` (`PeftConfig.from_pretrained`). Only LoRA is supported: other
adapter types (IA³, LoHa, LoKr, prefix or prompt tuning, ...) and LoRA variants that change the
merge (`use_dora`, `lora_bias`, `layer_replication`, `target_parameters`,
`trainable_token_indices`) are refused by name. Scaling is lora_alpha / r, or lora_alpha / √r
with `use_rslora`; `rank_pattern` / `alpha_pattern` apply per module (r is read from lora_A).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import CheckpointError, CompatibilityError
from registry.io.checkpoint import Checkpoint
from registry.io.safetensors import SafetensorsFile

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
REFUSED_OPTIONS = {
    "use_dora": "DoRA (use_dora: true)",
    "lora_bias": "LoRA biases (lora_bias: true)",
    "layer_replication": "layer replication",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
}


def is_adapter(path: Path) -> bool:
    """True for a directory holding a PEFT adapter (`adapter_config.json`)."""
    return (path / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class LoraModule:
    """One targeted weight: its A and B keys in the adapter file and its scaling."""

    a: str
    b: str
    scaling: float
    transpose: bool  # embeddings (B @ A)ᵀ, and fan_in_fan_out layers


@dataclass
class LoraAdapter:
    """A parsed LoRA adapter: per base tensor name, its low-rank update or its replacement."""

    path: Path
    base_model: str  # `base_model_name_or_path`
    file: SafetensorsFile
    modules: dict[str, LoraModule] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)  # base tensor name -> adapter key

    def close(self) -> None:
        self.file.close()


def read_adapter(path: Path) -> LoraAdapter:
    """Read and check a PEFT LoRA adapter directory.

    Raises:
        CompatibilityError: not LoRA, or a LoRA variant that changes the merge (named).
        CheckpointError: the config or the weights are missing or unreadable.
    """
    config = _peft_config(path)
    kind = str(getattr(config.peft_type, "value", config.peft_type))
    if kind != "LORA":
        raise CompatibilityError(
            f"{path}: adapter type {kind} is not supported (only LoRA); merge it into its base with peft's "
            "merge_and_unload() and give the merged model",
            model=str(path),
            reason="adapter type",
        )
    for option, what in REFUSED_OPTIONS.items():
        if getattr(config, option, None):
            raise CompatibilityError(
                f"{path}: {what} is not supported; merge the adapter into its base with peft's merge_and_unload() "
                "and give the merged model",
                model=str(path),
                reason=option,
            )
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(
            f"{path}: no {ADAPTER_WEIGHTS} (a .bin adapter or none); re-save it with safetensors "
            "(peft save_pretrained(..., safe_serialization=True))",
            path=str(path),
        )
    adapter = LoraAdapter(
        path=path, base_model=str(config.base_model_name_or_path or ""), file=SafetensorsFile(weights)
    )
    pairs: dict[str, dict[str, str]] = {}
    for key in adapter.file.tensors:
        name = key.removeprefix(_PREFIX)
        for suffix, part, embedding in (
            (".lora_A.weight", "a", False),
            (".lora_B.weight", "b", False),
            (".lora_embedding_A", "a", True),
            (".lora_embedding_B", "b", True),
        ):
            if name.endswith(suffix):
                module = name.removesuffix(suffix)
                pairs.setdefault(module, {})[part] = key
                pairs[module]["embedding"] = "1" if embedding else ""
                break
        else:
            if ".lora_" in name:
                raise CompatibilityError(
                    f"{path}: adapter tensor {key!r} is not a plain LoRA weight; merge the adapter into its base "
                    "with peft's merge_and_unload() and give the merged model",
                    model=str(path),
                    tensor=key,
                )
            adapter.replaced[name.replace(".base_layer.", ".")] = key
    for module, keys in pairs.items():
        if "a" not in keys or "b" not in keys:
            adapter.file.close()
            raise CheckpointError(
                f"{path}: {module} has only one of lora_A/lora_B; re-save the adapter", path=str(path)
            )
        rank = adapter.file.tensors[keys["a"]].shape[0]
        alpha = _pattern(config.alpha_pattern, module, config.lora_alpha)
        scaling = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        transpose = bool(keys["embedding"]) != bool(config.fan_in_fan_out)
        adapter.modules[module + ".weight"] = LoraModule(keys["a"], keys["b"], float(scaling), transpose)
    return adapter


def _peft_config(path: Path) -> Any:
    try:
        from peft import PeftConfig
    except ImportError:
        raise CheckpointError(
            f"{path} is a PEFT adapter: reading it needs the peft package (pip install peft)", path=str(path)
        ) from None
    try:
        return PeftConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: {ADAPTER_CONFIG} cannot be read by peft ({exc}); re-save the adapter", path=str(path)
        ) from None


def _pattern(patterns: dict[str, Any] | None, module: str, default: Any) -> Any:
    # peft matches a pattern key against the end of the module name (a whole dotted component).
    for key, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


class AdaptedCheckpoint(Checkpoint):
    """A base checkpoint seen through a LoRA adapter (see the module docstring)."""

    adapter: LoraAdapter
    base: Checkpoint

    @classmethod
    def wrap(cls, base: Checkpoint, adapter: LoraAdapter) -> AdaptedCheckpoint:
        """The adapted view of `base` (which it then owns and closes)."""
        missing = sorted(set(adapter.modules) - set(base.tensors)) + sorted(set(adapter.replaced) - set(base.tensors))
        if missing:
            adapter.close()
            raise CompatibilityError(
                f"{adapter.path}: the adapter targets {missing[0]!r}, which {base.path} does not have; "
                "it was trained on another architecture: use the model it was trained on",
                model=str(adapter.path),
                tensor=missing[0],
            )
        for name, key in adapter.replaced.items():
            if tuple(adapter.file.tensors[key].shape) != tuple(base.tensors[name].shape):
                adapter.close()
                raise CompatibilityError(
                    f"{adapter.path}: {key!r} has shape {list(adapter.file.tensors[key].shape)} but {base.path} has "
                    f"{list(base.tensors[name].shape)} (a resized vocabulary?); merge the adapter with peft first",
                    model=str(adapter.path),
                    tensor=name,
                )
        view = cls(path=base.path, config=base.config, tensors=base.tensors, format=base.format)
        view.adapter, view.base = adapter, base
        return view

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        module = self.adapter.modules.get(name)
        if name in self.adapter.replaced:  # modules_to_save, or an embedding's saved base_layer
            weight = self.adapter.file.read(self.adapter.replaced[name])
        else:
            weight = self.base.read(name, out)
            if module is not None and self.base.format == "bin":
                weight = weight.clone()  # .bin tensors are held in memory: never update them in place
        if module is None:
            return weight
        a = self.adapter.file.read(module.a).float()
        b = self.adapter.file.read(module.b).float()
        delta = b @ a
        if module.transpose:
            delta = delta.T
        merged = weight.float() + delta * module.scaling
        if weight.dtype != torch.float32 or out is not None:
            weight.copy_(merged)  # rounds once to the stored dtype, in place (pinned buffer included)
            return weight
        return merged

    def close(self) -> None:
        self.base.close()
        self.adapter.close()


def open_adapted(base_dir: Path, adapter_dir: Path) -> Checkpoint:
    """Open `base_dir` with the LoRA adapter in `adapter_dir` applied (see `AdaptedCheckpoint`)."""
    from registry.io.checkpoint import open_checkpoint

    adapter = read_adapter(adapter_dir)
    return AdaptedCheckpoint.wrap(open_checkpoint(base_dir), adapter)


def write_adapted(base_dir: Path, adapter_dir: Path, out: Path, *, shard_size: int = 5 * 1024**3) -> Path:
    """Write the base with the adapter applied as a plain checkpoint (for tools that load whole models).

    Tensors stream one at a time through `AdaptedCheckpoint`; the base's other files (config,
    tokenizer, generation config) are copied. The result equals peft's `merge_and_unload()`.

    Returns:
        `out`, holding the adapted checkpoint.

    Raises:
        CheckpointError, CompatibilityError: as `open_adapted`.
    """
    import shutil

    from registry.io.writer import ShardedWriter

    out.mkdir(parents=True, exist_ok=True)
    with open_adapted(base_dir, adapter_dir) as checkpoint:
        specs = [(name, info.dtype, tuple(info.shape)) for name, info in checkpoint.tensors.items()]
        writer = ShardedWriter(out, specs, shard_size=shard_size)
        try:
            for name in sorted(checkpoint.tensors):
                writer.write(name, checkpoint.read(name))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    for item in sorted(base_dir.iterdir()):
        weights = item.suffix in (".safetensors", ".bin") or item.name.endswith(".index.json")
        if item.is_file() and not weights:
            shutil.copy(item, out / item.name)
    return out
