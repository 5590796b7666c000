"""The tiny-model factory: loadable checkpoints, determinism, fine-tunes, extended vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from registry.lab.tiny import DemoFamily, build_tiny_llama, build_tiny_tokenizer, derive_finetune


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_family_loads_with_transformers(tiny_family: DemoFamily) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_family.sft))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_family.sft))
    text = "héllo বাংলা ཀ"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id == 1
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == text
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_finetune_is_base_plus_small_seeded_deltas(tiny_family: DemoFamily, tmp_path: Path) -> None:
    base, sft = _tensors(tiny_family.base), _tensors(tiny_family.sft)
    assert base.keys() == sft.keys() and "lm_head.weight" in base
    delta = torch.cat([(sft[k] - base[k]).reshape(-1) for k in sorted(base)])
    assert 0.005 < float(delta.std()) < 0.02
    again = derive_finetune(tiny_family.base, tmp_path / "again", seed=2)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(again).values(), sft.values(), strict=False))


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = build_tiny_llama(tmp_path / "a", seed=5, num_layers=1)
    b = build_tiny_llama(tmp_path / "b", seed=5, num_layers=1)
    c = build_tiny_llama(tmp_path / "c", seed=6, num_layers=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_bf16_sharded_tied_extended(tmp_path: Path) -> None:
    base = build_tiny_llama(
        tmp_path / "base", dtype="bfloat16", tie_word_embeddings=True, max_shard_size="40KB", num_layers=1
    )
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    tensors = _tensors(base)
    assert "lm_head.weight" not in tensors and all(t.dtype == torch.bfloat16 for t in tensors.values())
    ct = derive_finetune(base, tmp_path / "ct", seed=1, extra_vocab=16, max_shard_size="40KB")
    config = json.loads((ct / "config.json").read_text())
    assert config["vocab_size"] == 320 + 16 and config["tie_word_embeddings"] is True
    ct_tensors = _tensors(ct)
    assert ct_tensors["model.embed_tokens.weight"].shape == (336, 64)
    assert ct_tensors["model.embed_tokens.weight"].dtype == torch.bfloat16
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ct))
    assert len(tokenizer) == 336 and tokenizer.convert_tokens_to_ids("<ext_15>") == 335


def test_untied_extended_vocab_grows_lm_head(tiny_family_extended: DemoFamily) -> None:
    ct, base = _tensors(tiny_family_extended.ct), _tensors(tiny_family_extended.base)
    assert ct["lm_head.weight"].shape[0] == base["lm_head.weight"].shape[0] + 16
    assert _tensors(tiny_family_extended.sft)["lm_head.weight"].shape == base["lm_head.weight"].shape


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        build_tiny_tokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="dtype='int8'"):
        build_tiny_llama(tmp_path / "x", dtype="int8")  # type: ignore[arg-type]
