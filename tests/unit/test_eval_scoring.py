"""The batched scorer (`FastLM`) against lm-eval's own HFLM run one request at a time.

Each task type is compared on the tiny random Llama: multiple-choice log-likelihoods (shared
contexts, choices of different lengths, a context cut from the left), rolling log-likelihoods
(a document longer than the model's window), and greedy generation (left padding, rows that
stop at different steps). Small token budgets force several batches and mixed widths.
"""

from __future__ import annotations

from typing import Any

import pytest

from registry.evaluate.scoring import FastLM, auto_batch_tokens, token_bytes

TOL = 2e-4  # fp32: the same sums through different matmul shapes


def _instances(kind: str, args: list[tuple[Any, ...]]) -> list[Any]:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def models(tiny_family) -> tuple[Any, Any, Any]:
    from lm_eval.models.huggingface import HFLM

    kwargs = {"pretrained": str(tiny_family.sft), "device": "cpu", "dtype": "float32"}
    reference = HFLM(batch_size=1, **kwargs)  # HFLM one request per pass: the unbatched path
    small = FastLM(batch_size=1, max_batch_tokens=700, **kwargs)  # a few rows per batch
    large = FastLM(batch_size=1, **kwargs)  # the automatic budget
    return reference, small, large


CONTEXTS = [
    "Topic classification. Sentence: the match ended in a draw.\nTopic:",
    "Topic classification. Sentence: বাংলাদেশের রাজধানী ঢাকা।\nTopic:",
    "Q",
    # longer than the 512 positions (byte-level): HFLM cuts it from the left, by a different
    # amount for each choice, so these choices share no prefix
    "Long context. " + "পাঠ্য " * 60,
]
CHOICES = [" science/technology", " travel", " sports", " x"]


def test_multiple_choice_equals_unbatched_hflm(models) -> None:
    reference, small, large = models
    requests = _instances("loglikelihood", [(c, ch) for c in CONTEXTS for ch in CHOICES])
    want = reference.loglikelihood(requests, disable_tqdm=True)
    for lm in (small, large):
        got = lm.loglikelihood(requests, disable_tqdm=True)
        assert len(got) == len(want)
        for (g, g_greedy), (w, w_greedy) in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=TOL)
            assert g_greedy == w_greedy
    # the choices of one question really differ (the test would pass on a constant otherwise)
    assert len({round(w, 3) for w, _ in want[:4]}) == 4


def test_rolling_equals_unbatched_hflm(models) -> None:
    reference, small, large = models
    texts = ["Hello world.", "বাংলা ভাষা " * 5, "x" * 900, "a"]  # 900 bytes: two windows of 512
    requests = _instances("loglikelihood_rolling", [(t,) for t in texts])
    want = reference.loglikelihood_rolling(requests, disable_tqdm=True)
    for lm in (small, large):
        got = lm.loglikelihood_rolling(requests, disable_tqdm=True)
        assert got == pytest.approx(want, abs=TOL * 10)  # sums over ~900 tokens


def test_generation_equals_unbatched_hflm_with_left_padding_and_stops(models) -> None:
    reference, small, large = models
    prompts = ["Question: 2+2?\nAnswer:", "প্রশ্ন: ৩ + ৪?\nউত্তর:", "Q:", "A much longer prompt than the others. " * 3]
    free = {"until": [], "do_sample": False, "max_gen_toks": 24}
    free_text = reference.generate_until(_instances("generate_until", [(p, free) for p in prompts]), disable_tqdm=True)
    # stop strings taken from the middle of two rows' own outputs: those rows stop early, at
    # different steps, while the others run to max_gen_toks (rows leave the batch mid-way)
    stops = [free_text[0][5:8], free_text[3][12:15]]
    assert all(stops), free_text
    kwargs = {"until": stops, "do_sample": False, "max_gen_toks": 24}
    requests = _instances("generate_until", [(p, kwargs) for p in prompts])
    want = [reference.generate_until([r], disable_tqdm=True)[0] for r in requests]
    assert len(want[0]) < len(free_text[0]) and len(want[3]) < len(free_text[3])
    for lm in (small, large):
        assert lm.generate_until(requests, disable_tqdm=True) == want
        assert lm.generate_until(_instances("generate_until", [(p, free) for p in prompts]), disable_tqdm=True) == (
            free_text
        )


def test_sampling_goes_to_hflm(models) -> None:
    _reference, small, _large = models
    kwargs = {"until": ["\n"], "do_sample": True, "temperature": 0.7, "max_gen_toks": 4}
    (text,) = small.generate_until(_instances("generate_until", [("Q:", kwargs)]), disable_tqdm=True)
    assert isinstance(text, str)


def test_auto_batch_tokens_follows_memory(models) -> None:
    import torch

    _reference, _small, large = models
    config = large.model.config
    scoring = token_bytes(config, torch.float32, logits=True)
    generation = token_bytes(config, torch.float32, logits=False)
    assert scoring - generation == config.vocab_size * 12
    budget = auto_batch_tokens(large.model, torch.device("cpu"), floor=513)
    assert 513 <= budget <= 8192
    assert budget <= auto_batch_tokens(large.model, torch.device("cpu"), logits=False, floor=513) <= 4 * 8192
    # a 7B Llama in fp16 costs ~0.9 MB a scored token: 80 GB free gives ~26k tokens, not 8192
    llama7b = type("C", (), {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                             "intermediate_size": 11008, "vocab_size": 32000})()  # fmt: skip
    assert 0.5e6 < token_bytes(llama7b, torch.float16, logits=True) < 1.0e6
