"""Bits per byte end to end: lm-eval's FLORES number equals our UTF-8 computation from
log-likelihoods scored directly with transformers, on multi-byte scripts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from registry.evaluate.metrics import bits_per_byte, utf8_bytes
from registry.evaluate.tasks import find_task

TASKS = Path(__file__).resolve().parents[2] / "recipes" / "tasks"


def _short_sentences(shared_data: Path, lang: str, n: int) -> list[str]:
    """The first `n` FLORES devtest sentences short enough to fit one 512-token window."""
    lines = (shared_data / f"flores200/devtest/{lang}.jsonl").read_text("utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    return [t for t in texts if utf8_bytes(t) < 400][:n]


def _direct_loglikelihood(model_dir: Path, text: str) -> float:
    """log p(text) under the model: BOS, then every byte token scored given its prefix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


@pytest.mark.parametrize("lang", ["ben_Beng", "bod_Tibt"])
def test_flores_bits_per_byte_is_utf8_and_matches_direct_scoring(
    shared_data: Path, tiny_family, tmp_path: Path, lang: str
) -> None:
    from registry.evaluate.runner import PlannedTask, load_lm, run_task

    texts = _short_sentences(shared_data, lang, 4)
    assert all(utf8_bytes(t) > 2 * len(t) for t in texts), "these scripts take 3 bytes per character"
    data = tmp_path / "flores200" / "devtest"
    data.mkdir(parents=True)
    (data / f"{lang}.jsonl").write_text(
        "".join(json.dumps({"id": i, "lang": lang, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    spec = find_task(f"flores_{lang}", tasks_dir=TASKS)
    planned = PlannedTask(spec=spec, num_fewshot=0, limit=None, task_hash="test")
    result = run_task(load_lm(tiny_family.base, device="cpu", batch_size=4), planned, data_dir=tmp_path)
    assert (result.n_samples, result.n_total) == (4, 4)
    direct = [_direct_loglikelihood(tiny_family.base, t) for t in texts]
    expected = bits_per_byte(direct, texts)
    assert result.metrics["bits_per_byte"].value == pytest.approx(expected, rel=1e-5)
    assert result.metrics["byte_perplexity"].value == pytest.approx(2**expected, rel=1e-5)
    assert result.metrics["bits_per_byte"].higher_is_better is False
    # counting characters instead of bytes would give a number about 3x larger
    per_char = -sum(direct) / (math.log(2) * sum(len(t) for t in texts))
    assert per_char > 2.5 * expected
