"""Prompt checks and streamed generation (transformers' `TextIteratorStreamer` on a worker thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from space.errors import PromptError
from space.models import LoadedModel


def check_max_new_tokens(max_new_tokens: Any, *, limit: int) -> int:
    """`max_new_tokens` as an int in [1, limit].

    Raises:
        PromptError: when it is missing, not a whole number or out of range.
    """
    from space.inputs import whole_number

    return whole_number(max_new_tokens, name="max_new_tokens", low=1, high=limit)


def encode_prompt(loaded: LoadedModel, prompt: str | None, *, max_new_tokens: int) -> Any:
    """The prompt's input ids (1, n), refused when empty or when it leaves no room in the context.

    Raises:
        PromptError: naming the token counts and the model's context length.
    """
    if prompt is None or not prompt.strip():
        raise PromptError("the prompt is empty: type some text, or pick an example")
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    n = int(ids.shape[1])
    if n + max_new_tokens > loaded.context_length:
        raise PromptError(
            f"the prompt is {n} tokens; with {max_new_tokens} new tokens that exceeds the model's context of "
            f"{loaded.context_length} tokens: shorten the prompt or ask for fewer new tokens"
        )
    return ids


def stream_text(
    loaded: LoadedModel, prompt: str | None, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
) -> Iterator[str]:
    """Generate from `prompt`, yielding the text so far after each new token (the prompt excluded).

    Args:
        loaded: the model.
        prompt: the text to continue.
        max_new_tokens: tokens to generate at most.
        temperature: 0 is greedy decoding; above 0 samples (seeded, so runs repeat).
        seed: the sampling seed.

    Raises:
        PromptError: before generating, for an empty or too long prompt.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = threading.Event()

    class _StopWhenAbandoned(StoppingCriteria):
        # A client that disconnects drops this generator; the worker thread then stops at the next
        # token instead of generating the rest for nobody.
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    ids = encode_prompt(loaded, prompt, max_new_tokens=max_new_tokens).to(loaded.device)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([_StopWhenAbandoned()]),
    }
    if temperature and temperature > 0:
        options.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
    else:
        options.update(do_sample=False)
    pad = loaded.tokenizer.pad_token_id
    if pad is None:
        pad = loaded.tokenizer.eos_token_id
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                if options["do_sample"]:
                    torch.manual_seed(seed)
                loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **options)
        except BaseException as exc:  # noqa: BLE001 (re-raised on the caller's thread below)
            failure.append(exc)
            streamer.end()  # type: ignore[no-untyped-call]

    thread = threading.Thread(target=work, name="mergeling-generate", daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()
    thread.join()
    if failure:
        raise failure[0]
    if not text:
        yield ""
