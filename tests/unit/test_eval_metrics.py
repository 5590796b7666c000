"""Bits per byte counts UTF-8 bytes, and agrees with lm-eval's own aggregation."""

from __future__ import annotations

import math

import pytest

from registry.evaluate.metrics import bits_per_byte, byte_perplexity, utf8_bytes


def test_utf8_bytes_multibyte_scripts() -> None:
    assert utf8_bytes("abc") == 3
    assert utf8_bytes("বাংলা") == 15  # 5 code points x 3 bytes
    assert utf8_bytes("བོད") == 9
    assert utf8_bytes("ئۇيغۇر") == 12  # Arabic script: 2 bytes each
    assert utf8_bytes("Монгол") == 12


def test_bits_per_byte_by_hand() -> None:
    # one nat per character of a 3-byte script: ln(e^-5) over 15 bytes
    texts = ["বাংলা"]
    assert bits_per_byte([-5.0], texts) == pytest.approx(5.0 / (15 * math.log(2)))
    # corpus-level: total nats / total bytes, not a mean of per-text ratios
    value = bits_per_byte([-3.0, -30.0], ["abc", "বাংলা"])
    assert value == pytest.approx(33.0 / (18 * math.log(2)))
    assert byte_perplexity([-3.0, -30.0], ["abc", "বাংলা"]) == pytest.approx(2**value)


def test_bits_per_byte_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one log-likelihood per text"):
        bits_per_byte([-1.0], ["a", "b"])
    with pytest.raises(ValueError, match="no bytes"):
        bits_per_byte([0.0], [""])


def test_lm_eval_counts_utf8_bytes_and_matches() -> None:
    from lm_eval.api.metrics import bits_per_byte as lm_bpb
    from lm_eval.api.metrics import weighted_perplexity
    from lm_eval.api.task import ConfigurableTask

    texts = ["Hello world.", "বাংলা ভাষা", "ཀུན་ལ་", "Уламжлалт"]
    lls = [-20.0, -41.5, -30.25, -12.0]
    # what ConfigurableTask.process_results feeds the aggregation for loglikelihood_rolling
    items = [(ll, ConfigurableTask.count_bytes(t)) for ll, t in zip(lls, texts, strict=True)]
    assert [n for _, n in items] == [utf8_bytes(t) for t in texts]
    assert lm_bpb(items) == pytest.approx(bits_per_byte(lls, texts))
    assert weighted_perplexity(items) == pytest.approx(byte_perplexity(lls, texts))
