"""A small, deterministic causal-LM training loop for the lab's tiny Llamas (CPU, fp32).

Two kinds of data share one loop:
- plain strings are documents: they are tokenized, joined with `</s>` into one stream, and each
  step samples `batch_size` windows of `seq_len + 1` tokens from it (pre-training style);
- `Example(prompt, completion)` pairs are supervised: each row is one example, right-padded, and
  only the completion tokens (plus a closing `</s>`) carry loss, so the model learns to answer in
  the format the evaluation prompts use.

Everything random (window starts, example order, dropout-free init aside) comes from one seeded
`torch.Generator`, so the same inputs and seed give bit-identical weights on the same machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import LabError
from registry.progress import progress_bar

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_IGNORE = -100  # label id that CrossEntropyLoss skips


@dataclass(frozen=True)
class Example:
    """One supervised example: loss is taken on `completion` only."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        out_dir: the checkpoint written (HF layout: safetensors, config, tokenizer, generation config).
        steps: optimizer steps taken.
        tokens: tokens seen (loss-bearing ones for `Example` data).
        first_loss: mean loss over the first 10 steps.
        last_loss: mean loss over the last 10 steps.
        seconds: wall time of the loop.
        checkpoints: (step, tokens seen by then, directory) of each intermediate checkpoint saved.
    """

    out_dir: Path
    steps: int
    tokens: int
    first_loss: float
    last_loss: float
    seconds: float
    checkpoints: tuple[tuple[int, int, str], ...] = ()


def train_causal_lm(
    model_dir: Path,
    texts: Sequence[str | Example],
    *,
    out_dir: Path,
    steps: int,
    lr: float,
    batch_size: int = 16,
    seq_len: int = 128,
    seed: int = 0,
    warmup_steps: int | None = None,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    threads: int | None = 1,
    progress: bool = True,
    desc: str = "train",
    save_at: Mapping[int, Path] | None = None,
) -> TrainResult:
    """Continue training the checkpoint in `model_dir` on `texts` and save it to `out_dir`.

    AdamW with linear warm-up then cosine decay to 10 % of `lr`. Weight decay defaults to 0: decay
    would also move rows the data never touches (e.g. embeddings of another script), which is
    not what fine-tuning a large model does to them.

    Args:
        model_dir: a checkpoint directory with weights, config and tokenizer.
        texts: documents (str), supervised `Example`s, or a mix of both.
        out_dir: where to save the trained checkpoint (created; existing files are overwritten).
        steps: optimizer steps.
        lr: peak learning rate.
        batch_size: rows per step.
        seq_len: tokens per row (documents are windowed to it, examples truncated from the left).
        seed: seeds the init-free randomness: window starts and example order.
        warmup_steps: linear warm-up length; default 5 % of `steps`.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: max global gradient norm.
        threads: torch CPU threads for this run (restored afterwards); None keeps the current
            setting. One is the default: on a shared 2-core machine, two threads that compete with
            other processes run several times slower than one.
        progress: show a progress bar on stderr.
        desc: the progress bar label.
        save_at: step -> directory: also save the model (and tokenizer) as it is after that many
            steps, e.g. CT checkpoints of one run for the discard analysis. Saving does not change
            the run: the final weights are the same with or without it.

    Returns:
        A `TrainResult`.

    Raises:
        LabError: if there is nothing to train on or the loss becomes NaN.
    """
    import torch

    if steps < 1 or not texts:
        raise LabError(f"nothing to train: steps={steps}, {len(texts)} texts; pass steps >= 1 and some text")
    outside = sorted(step for step in save_at or {} if not 1 <= step <= steps)
    if outside:
        raise LabError(f"cannot save a checkpoint at step {outside[0]} of a {steps}-step run; pick steps in 1..{steps}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(
            model_dir, texts, out_dir=out_dir, steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed,
            warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, progress=progress, desc=desc,
            save_at=dict(save_at or {}),
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous)


def _train(
    model_dir: Path,
    texts: Sequence[str | Example],
    *,
    out_dir: Path,
    steps: int,
    lr: float,
    batch_size: int,
    seq_len: int,
    seed: int,
    warmup_steps: int | None,
    weight_decay: float,
    grad_clip: float,
    progress: bool,
    desc: str,
    save_at: dict[int, Path],
) -> TrainResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    docs = [t for t in texts if isinstance(t, str)]
    examples = [t for t in texts if isinstance(t, Example)]
    stream = _token_stream(tokenizer, docs) if docs else None
    if stream is not None and stream.numel() <= seq_len + 1:
        raise LabError(f"only {stream.numel()} tokens of text for seq_len={seq_len}; add text or lower seq_len")
    encoded = [_encode_example(tokenizer, ex, seq_len) for ex in examples]
    # Rows per step follow the data's share, so a mix of documents and examples stays mixed.
    doc_share = len(docs) / len(texts)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    warmup = max(1, round(0.05 * steps)) if warmup_steps is None else max(1, warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup=warmup, total=steps))
    losses: list[float] = []
    saved: list[tuple[int, int, str]] = []
    tokens = 0
    order = _Cycle(len(encoded), generator) if encoded else None
    start = time.perf_counter()
    bar = progress_bar(range(steps), desc=desc, unit="step", enabled=progress)
    for _ in bar:
        n_docs = _doc_rows(batch_size, doc_share, generator)
        rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        if n_docs and stream is not None:
            rows += _sample_windows(stream, n_docs, seq_len, generator)
        if order is not None:
            rows += [encoded[order.next()] for _ in range(batch_size - n_docs)]
        input_ids, labels, attention = _collate(rows, pad_id=tokenizer.pad_token_id)
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        loss = out.loss
        if not torch.isfinite(loss):
            raise LabError(f"loss became {loss.item()} at step {len(losses)}; lower lr (now {lr})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int((labels[:, 1:] != _IGNORE).sum())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if len(losses) in save_at:
            where = save_at[len(losses)]
            where.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(where))
            tokenizer.save_pretrained(str(where))
            saved.append((len(losses), tokens, str(where)))
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    result = TrainResult(
        out_dir=out_dir,
        steps=steps,
        tokens=tokens,
        first_loss=sum(losses[:10]) / len(losses[:10]),
        last_loss=sum(losses[-10:]) / len(losses[-10:]),
        seconds=seconds,
        checkpoints=tuple(saved),
    )
    logger.info("%s: %d steps, loss %.3f -> %.3f, %.0f s", desc, steps, result.first_loss, result.last_loss, seconds)
    return result


def _lr_factor(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _doc_rows(batch_size: int, doc_share: float, generator: torch.Generator) -> int:
    import torch

    if doc_share in (0.0, 1.0):
        return round(doc_share * batch_size)
    return int((torch.rand(batch_size, generator=generator) < doc_share).sum())


def _token_stream(tokenizer: PreTrainedTokenizerBase, docs: Sequence[str]) -> torch.Tensor:
    """All documents as one 1-D int64 tensor: `<s> doc </s> <s> doc </s> ...`."""
    import torch

    ids: list[int] = []
    for batch_start in range(0, len(docs), 256):
        for row in tokenizer(list(docs[batch_start : batch_start + 256]), verbose=False)["input_ids"]:
            ids.extend(row)
            ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _sample_windows(
    stream: torch.Tensor, count: int, seq_len: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    import torch

    starts = torch.randint(0, stream.numel() - seq_len, (count,), generator=generator)
    windows = [stream[s : s + seq_len] for s in starts.tolist()]
    return [(w, w.clone()) for w in windows]


def _encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for one example; labels are -100 on the prompt. Shapes (T,), T <= seq_len."""
    import torch

    prompt = tokenizer(example.prompt, verbose=False)["input_ids"]
    completion = tokenizer(example.completion, add_special_tokens=False, verbose=False)["input_ids"]
    completion = completion + [tokenizer.eos_token_id]
    ids = (prompt + completion)[-seq_len:]  # keep the answer; long few-shot contexts lose their start
    n_labels = min(len(completion), len(ids))
    labels = [_IGNORE] * (len(ids) - n_labels) + ids[len(ids) - n_labels :]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def _collate(
    rows: list[tuple[torch.Tensor, torch.Tensor]], *, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad rows into (B, T) input ids, labels (-100 on padding) and an attention mask."""
    import torch

    width = max(ids.numel() for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), _IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : ids.numel()] = ids
        labels[i, : lab.numel()] = lab
        attention[i, : ids.numel()] = 1
    return input_ids, labels, attention


class _Cycle:
    """Endless, seeded, epoch-wise shuffled order over `n` items."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self._n = n
        self._generator = generator
        self._order: list[int] = []

    def next(self) -> int:
        import torch

        if not self._order:
            self._order = torch.randperm(self._n, generator=self._generator).tolist()
        return self._order.pop()


def save_generation_config(model_dir: Path) -> None:
    """Write a greedy `generation_config.json` matching the tokenizer's special ids.

    Args:
        model_dir: a checkpoint directory with a tokenizer.
    """
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    GenerationConfig(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    ).save_pretrained(str(model_dir))
