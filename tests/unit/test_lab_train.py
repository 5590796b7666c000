"""The lab training loop: deterministic, learns what it is shown, loss only on completions."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import LabError
from registry.lab.tiny import build_tiny_llama
from registry.lab.train import Example, train_causal_lm

TEXT = "The quick brown fox jumps over the lazy dog. " * 8


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("base"), seed=3, hidden_size=32, intermediate_size=64)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _completion_logprob(model_dir: Path, prompt: str, completion: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(float(logits[i - 1, ids[i]]) for i in range(len(prompt_ids), len(ids)))


def test_same_seed_same_weights_and_loss_falls(tiny_base: Path, tmp_path: Path) -> None:
    runs = [
        train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / name, steps=30, lr=3e-3, batch_size=4, seq_len=32,
                        seed=7, progress=False)
        for name in ("a", "b")
    ]  # fmt: skip
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert runs[0].last_loss < runs[0].first_loss - 0.5
    assert runs[0].steps == 30 and runs[0].tokens == 30 * 4 * 31
    base = _weights(tiny_base)
    assert any(not a[k].equal(base[k]) for k in a)


def test_intermediate_checkpoints_leave_the_run_unchanged(tiny_base: Path, tmp_path: Path) -> None:
    kwargs = dict(steps=12, lr=3e-3, batch_size=4, seq_len=32, seed=7, progress=False)
    plain = train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / "plain", **kwargs)  # type: ignore[arg-type]
    saving = train_causal_lm(
        tiny_base, [TEXT], out_dir=tmp_path / "saving", save_at={4: tmp_path / "s4", 8: tmp_path / "s8"}, **kwargs
    )  # type: ignore[arg-type]
    final, again = _weights(tmp_path / "plain"), _weights(tmp_path / "saving")
    assert all(final[k].equal(again[k]) for k in final)  # saving does not touch the run
    assert plain.checkpoints == ()
    assert saving.checkpoints == ((4, 4 * 4 * 31, str(tmp_path / "s4")), (8, 8 * 4 * 31, str(tmp_path / "s8")))
    s4, s8 = _weights(tmp_path / "s4"), _weights(tmp_path / "s8")
    assert any(not s4[k].equal(s8[k]) for k in s4) and any(not s8[k].equal(final[k]) for k in s8)
    assert (tmp_path / "s4" / "tokenizer.json").is_file()
    with pytest.raises(LabError, match="cannot save a checkpoint at step 13 of a 12-step run"):
        train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / "x", save_at={13: tmp_path / "s13"}, **kwargs)  # type: ignore[arg-type]


def test_other_seed_other_weights(tiny_base: Path, tmp_path: Path) -> None:
    for seed in (1, 2):
        train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / str(seed), steps=5, lr=1e-3, batch_size=2, seq_len=32,
                        seed=seed, progress=False)  # fmt: skip
    one, two = _weights(tmp_path / "1"), _weights(tmp_path / "2")
    assert any(not one[k].equal(two[k]) for k in one)


def test_examples_learn_the_completion_not_the_prompt(tiny_base: Path, tmp_path: Path) -> None:
    examples = [Example(prompt=f"Item {i}. Topic:", completion=" sports") for i in range(8)]
    before = _completion_logprob(tiny_base, "Item 3. Topic:", " sports")
    result = train_causal_lm(tiny_base, examples, out_dir=tmp_path / "sft", steps=25, lr=3e-3, batch_size=4,
                             seq_len=64, seed=0, progress=False)  # fmt: skip
    after = _completion_logprob(tmp_path / "sft", "Item 3. Topic:", " sports")
    assert after > before + 5.0
    # Loss-bearing tokens are the completion (" sports" = 7 bytes) plus </s>, never the prompt.
    assert result.tokens == 25 * 4 * 8


def test_saved_checkpoint_loads_with_its_tokenizer(tiny_base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / "out", steps=2, lr=1e-3, batch_size=2, seq_len=16,
                    seed=0, progress=False)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert model.config.vocab_size == len(tokenizer)


def test_threads_are_restored(tiny_base: Path, tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / "t", steps=1, lr=1e-3, batch_size=1, seq_len=16,
                    seed=0, threads=1, progress=False)  # fmt: skip
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("texts", "steps", "seq_len", "match"), [([], 5, 16, "nothing to train"),
                                                                  (["ab"], 5, 64, "only 4 tokens"),
                                                                  ([TEXT], 0, 16, "steps=0")])  # fmt: skip
def test_refuses_what_cannot_train(tiny_base: Path, tmp_path: Path, texts, steps, seq_len, match) -> None:
    with pytest.raises(LabError, match=match):
        train_causal_lm(tiny_base, texts, out_dir=tmp_path / "x", steps=steps, lr=1e-3, seq_len=seq_len,
                        progress=False)  # fmt: skip


def test_nan_loss_is_reported(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lower lr"):
        train_causal_lm(tiny_base, [TEXT], out_dir=tmp_path / "nan", steps=20, lr=1e9, batch_size=2, seq_len=16,
                        seed=0, grad_clip=1e30, progress=False)  # fmt: skip
