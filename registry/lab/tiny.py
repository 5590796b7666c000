"""Tiny random Llama checkpoints in Hugging Face layout, for tests, benchmarks and the demo.

`build_tiny_llama` writes a randomly initialised `LlamaForCausalLM` (safetensors, optionally
sharded, fp32/bf16/fp16, tied or untied embeddings) plus a matching tokenizer, so
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` both work.
`derive_finetune` makes a "fine-tune" of such a base: the same config, base weights plus seeded
small deltas, optionally with an extended vocabulary (more embedding and lm_head rows, a bigger
tokenizer), like a continually-pretrained CT-X model. `build_demo_family` makes base + CT + SFT.

The tokenizer is byte-level BPE with no merges (every byte is one token), built in code with no
training, so any text in any script round-trips; ids 0-2 are `<pad>`, `<s>`, `</s>`, then the
256 byte symbols, then filler tokens `<tiny_i>` up to `vocab_size`. Extended-vocabulary models add
`<ext_i>` tokens after those, ids matching the extra embedding rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

DType = Literal["float32", "bfloat16", "float16"]
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
_SPECIALS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
MIN_VOCAB = len(_SPECIALS) + 256


@dataclass(frozen=True)
class DemoFamily:
    """Paths of a tiny base model, a CT fine-tune (extended vocabulary if asked) and an SFT fine-tune."""

    base: Path
    ct: Path
    sft: Path


def build_tiny_tokenizer(*, vocab_size: int = MIN_VOCAB, extra_tokens: int = 0) -> PreTrainedTokenizerFast:
    """Build the byte-level tokenizer of the tiny models (no training, deterministic).

    Args:
        vocab_size: ids of the base vocabulary (at least 259: 3 special tokens + 256 bytes).
        extra_tokens: `<ext_i>` tokens appended after the base vocabulary (extended-vocab CT).

    Returns:
        A `PreTrainedTokenizerFast` with `vocab_size + extra_tokens` ids.

    Raises:
        ValueError: if `vocab_size` is below 259 or `extra_tokens` is negative.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is too small: the tiny tokenizer needs at least {MIN_VOCAB}")
    if extra_tokens < 0:
        raise ValueError(f"extra_tokens={extra_tokens} must be >= 0")
    symbols = list(_SPECIALS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols += [f"<tiny_{i}>" for i in range(vocab_size - len(symbols))]
    symbols += [f"<ext_{i}>" for i in range(extra_tokens)]
    core = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    # add_prefix_space=False: decode(encode(x)) == x byte for byte.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, 1)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not supported: use one of {sorted(table)}")
    return table[dtype]


def _save(model: PreTrainedModel, out_dir: Path, *, max_shard_size: str | int | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if max_shard_size is None:
        model.save_pretrained(str(out_dir))
    else:
        model.save_pretrained(str(out_dir), max_shard_size=max_shard_size)


def build_tiny_llama(
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 320,
    dtype: DType = "float32",
    tie_word_embeddings: bool = False,
    max_shard_size: str | int | None = None,
) -> Path:
    """Write a random tiny Llama checkpoint (config, safetensors, generation config, tokenizer).

    Args:
        out_dir: the checkpoint directory; created if missing.
        seed: seeds the random initialisation (same seed, same bytes).
        hidden_size: model width.
        intermediate_size: MLP width.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention when fewer than `num_heads`).
        vocab_size: embedding rows (at least 259, see `build_tiny_tokenizer`).
        dtype: storage dtype of the weights.
        tie_word_embeddings: share `lm_head` with `embed_tokens` (no `lm_head.weight` is saved).
        max_shard_size: shard the weights (e.g. "20KB" or bytes) with an index; None: one file.

    Returns:
        `out_dir`.

    Raises:
        ValueError: on an unsupported dtype or a vocabulary too small for the tokenizer.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch_dtype = _torch_dtype(dtype)
    tokenizer = build_tiny_tokenizer(vocab_size=vocab_size)
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    # transformers wraps `to` in a decorator whose stub mypy reads as unbound (it wants `self` first)
    model = LlamaForCausalLM(config).to(torch_dtype)  # type: ignore[arg-type]
    _save(model, out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(out_dir))
    logger.info("Wrote tiny Llama (%s, seed %d) to %s", dtype, seed, out_dir)
    return out_dir


def derive_finetune(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    scale: float = 0.01,
    extra_vocab: int = 0,
    dtype: DType | None = None,
    max_shard_size: str | int | None = None,
) -> Path:
    """Write a "fine-tune" of a tiny base: every tensor is base + `scale`·N(0, 1) (seeded).

    Deltas are drawn in fp32, added to the base in fp32, then stored in the output dtype. With
    `extra_vocab`, the embedding (and untied `lm_head`) gain that many random rows after the
    base's, `config.vocab_size` grows to match, and the tokenizer gains `<ext_i>` tokens.

    Args:
        base_dir: a checkpoint written by `build_tiny_llama`.
        out_dir: the new checkpoint directory; created if missing.
        seed: seeds the deltas (and the extra rows).
        scale: standard deviation of the deltas.
        extra_vocab: embedding rows to add (0: same vocabulary as the base).
        dtype: storage dtype; None keeps the base's.
        max_shard_size: as in `build_tiny_llama`.

    Returns:
        `out_dir`.

    Raises:
        ValueError: on a negative `extra_vocab` or `scale`, or an unsupported dtype.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if extra_vocab < 0 or scale < 0:
        raise ValueError(f"extra_vocab={extra_vocab} and scale={scale} must both be >= 0")
    config = LlamaConfig.from_pretrained(str(base_dir))
    base = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    base_dtype = json.loads((base_dir / "config.json").read_text()).get("dtype") or "float32"
    torch_dtype = _torch_dtype(dtype or base_dtype)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    # Sorted names: the deltas depend only on the seed and the tensor names, not on dict order.
    for name, tensor in sorted(base.state_dict().items()):
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        state[name] = tensor + scale * noise
    base_vocab = config.vocab_size
    if extra_vocab:
        config.vocab_size = base_vocab + extra_vocab
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in state:
                rows = 0.02 * torch.randn((extra_vocab, config.hidden_size), generator=generator)
                state[name] = torch.cat([state[name], rows])
    model = LlamaForCausalLM(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"base {base_dir} does not look like a tiny Llama: missing {missing}, unexpected {unexpected}")
    _save(model.to(torch_dtype), out_dir, max_shard_size=max_shard_size)  # type: ignore[arg-type]  # as above
    build_tiny_tokenizer(vocab_size=base_vocab, extra_tokens=extra_vocab).save_pretrained(str(out_dir))
    logger.info("Wrote fine-tune of %s (seed %d, +%d vocab) to %s", base_dir, seed, extra_vocab, out_dir)
    return out_dir


def build_demo_family(
    root: Path,
    *,
    seed: int = 0,
    dtype: DType = "float32",
    ct_extra_vocab: int = 0,
    tie_word_embeddings: bool = False,
    max_shard_size: str | int | None = None,
) -> DemoFamily:
    """Write `root/base`, `root/ct` and `root/sft`: a tiny base and two fine-tunes of it.

    Args:
        root: the parent directory; created if missing.
        seed: the base's seed; the CT uses `seed + 1`, the SFT `seed + 2`.
        dtype: storage dtype of all three.
        ct_extra_vocab: extra embedding rows of the CT model (extended vocabulary).
        tie_word_embeddings: tied embeddings for all three.
        max_shard_size: shard all three checkpoints.

    Returns:
        The three paths.
    """
    base = build_tiny_llama(
        root / "base", seed=seed, dtype=dtype, tie_word_embeddings=tie_word_embeddings, max_shard_size=max_shard_size
    )
    ct = derive_finetune(base, root / "ct", seed=seed + 1, extra_vocab=ct_extra_vocab, max_shard_size=max_shard_size)
    sft = derive_finetune(base, root / "sft", seed=seed + 2, max_shard_size=max_shard_size)
    return DemoFamily(base=base, ct=ct, sft=sft)
