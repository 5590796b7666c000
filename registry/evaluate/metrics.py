"""Bits per byte and byte perplexity from summed log-likelihoods (pure functions).

Both are corpus-level: total negative log-likelihood over total UTF-8 bytes, so scripts whose
characters take 3 bytes (Bengali, Tamil, Tibetan...) and tokenizers of any granularity compare
fairly. This is what lm-eval's `bits_per_byte` / `byte_perplexity` aggregations compute from
`(loglikelihood, len(text.encode("utf-8")))` pairs; the tests check the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def utf8_bytes(text: str) -> int:
    """Number of UTF-8 bytes of `text` (not characters: "ব" is 3 bytes)."""
    return len(text.encode("utf-8"))


def bits_per_byte(loglikelihoods: Sequence[float], texts: Sequence[str]) -> float:
    """Corpus bits per byte: -Σ log p(text) / (ln 2 · Σ bytes).

    Args:
        loglikelihoods: natural-log likelihood of each whole text (rolling, as lm-eval computes).
        texts: the texts, in the same order.

    Returns:
        Bits per UTF-8 byte (lower is better).

    Raises:
        ValueError: the sequences differ in length, are empty, or hold no bytes.
    """
    if len(loglikelihoods) != len(texts) or not texts:
        raise ValueError(f"need one log-likelihood per text, got {len(loglikelihoods)} and {len(texts)}")
    total_bytes = sum(utf8_bytes(t) for t in texts)
    if total_bytes == 0:
        raise ValueError("the texts hold no bytes")
    return -math.fsum(loglikelihoods) / (math.log(2) * total_bytes)


def byte_perplexity(loglikelihoods: Sequence[float], texts: Sequence[str]) -> float:
    """Corpus byte perplexity: 2 ** bits_per_byte (same arguments and errors)."""
    return float(2.0 ** bits_per_byte(loglikelihoods, texts))
