"""Batched scoring for lm-eval: each context runs once, its KV cache serves every continuation.

`FastLM` is lm-eval's `HFLM` (same loading, tokenisation, truncation and request format, so
lm-eval still builds the requests and computes the metrics) with three methods replaced:

- `_loglikelihood_tokens` (multiple choice): a request's model input is HFLM's,
  `(context + continuation)[-(max_length + 1):][:-1]`, split into a *prefix* (every token whose
  logits are not needed) and a *tail* (the last `len(continuation)` tokens, whose logits score the
  continuation). Requests with the same prefix (the choices of one question) form a group. A batch
  of groups runs their prefixes once (right-padded, `use_cache`, one logit row kept), the KV cache
  is repeated per choice, and all tails run in one second pass with explicit positions and a mask
  that hides the prefix padding. SIB-200 5-shot: one 5-shot context pass and 7 label passes of a
  few tokens, where HFLM runs the whole context 7 times.
- `loglikelihood_rolling` (bits per byte): all windows of all documents go through the same path
  at once (an empty prefix: one plain pass per window), sorted by length across the whole task,
  where HFLM batches them in document order.
- `generate_until` (greedy): a left-padded batch with the KV cache; each row stops at the end of
  text or as soon as its decoded text contains a stop sequence, and stopped rows leave the batch
  (their cache rows are dropped), so a batch costs its rows' own lengths rather than the longest.
  Sampling requests go to HFLM's own `generate_until`.

Batches are sized by tokens, not rows: `max_batch_tokens` padded tokens per forward pass, by
default from the free memory (`auto_batch_tokens`). Scores equal HFLM's to floating-point noise
(different matmul shapes); `tests/unit/test_eval_scoring.py` compares both paths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

log = logging.getLogger(__name__)

CPU_TOKEN_CAP = 8192  # scoring: bigger batches stop paying on CPU (their logits alone are 256 MB at 8k ids)
GPU_TOKEN_CAP = 1 << 17
# GPU generation keeps one logit row per sequence: 4x the tokens (KV cache) fit. Not on CPU: there
# the cache's per-step copy makes 32 rows of 1k tokens cost 4 ms a row-step against 2.9 ms with 8.
GENERATION_CAP_FACTOR = 4
MEMORY_SHARE = 0.3  # of the free memory, for one batch's activations, cache and logits
_Request = tuple[tuple[str, str] | None, list[int], list[int]]


def _free_memory(device: torch.device) -> int:
    """Bytes free on `device` (CUDA: the driver's count; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def token_bytes(config: Any, dtype: torch.dtype, *, logits: bool) -> int:
    """Memory one token of a batch costs: its KV cache in every layer, a few hidden-size
    activations, the MLP's, and (for scoring) its logits row in the model's dtype and in fp32."""
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    hidden = int(getattr(config, "hidden_size", 4096))
    layers = int(getattr(config, "num_hidden_layers", 32))
    heads = int(getattr(config, "num_attention_heads", 32))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    vocab = int(getattr(config, "vocab_size", 32000))
    per = 2 * layers * kv_heads * head_dim * size + (8 * hidden + 3 * inter) * size
    if logits:
        per += vocab * (size + 8)  # logits, their fp32 log-softmax
    return per


def auto_batch_tokens(model: Any, device: torch.device, *, logits: bool = True, floor: int = 1) -> int:
    """Padded tokens per forward pass that fit in `MEMORY_SHARE` of the free memory, capped
    (`CPU_TOKEN_CAP`, `GPU_TOKEN_CAP`) and never below `floor` (one full-length row)."""
    dtype = next(model.parameters()).dtype
    fit = int(_free_memory(device) * MEMORY_SHARE) // token_bytes(model.config, dtype, logits=logits)
    cap = GPU_TOKEN_CAP if device.type == "cuda" else CPU_TOKEN_CAP
    if not logits and device.type == "cuda":
        cap *= GENERATION_CAP_FACTOR
    return max(floor, min(fit, cap))


def shared_batch_fits(groups: int, rows: int, prefix: int, tail: int, budget: int) -> bool:
    """Whether `groups` prefixes of `prefix` tokens and `rows` tails of `tail` tokens fit `budget`:
    the prefix pass (`groups x prefix` tokens, one logit row each), the tail pass with logits
    (`rows x tail`), and the prefix cache repeated per row (`rows x prefix` tokens of KV cache
    only, about half a scored token's cost: twice the budget)."""
    return groups * prefix <= budget and rows * tail <= budget and rows * prefix <= 2 * budget


class FastLM(HFLM):  # type: ignore[misc]  # lm-eval is untyped
    """HFLM with prefix-shared, token-budgeted scoring and early-exit greedy generation.

    Args:
        max_batch_tokens: padded tokens per forward pass; None: `auto_batch_tokens`.
        max_gen_rows: most rows of one generation batch (the CLI's `--batch-size`); None: by memory.
        **kwargs: HFLM's arguments (`pretrained`, `device`, `batch_size`, `dtype`, ...).
    """

    def __init__(self, *, max_batch_tokens: int | None = None, max_gen_rows: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_batch_tokens = max_batch_tokens
        self._max_gen_rows = max_gen_rows
        # (context tokens, tokens generated) per greedy request, in run order (bench_eval's floor)
        self.generation_log: list[tuple[list[int], int]] = []

    # -- batch sizes -------------------------------------------------------------------------
    def set_row_budget(self, rows: int) -> None:
        """Size batches in rows, as `--batch-size N` does: N full-length rows of scoring
        (N x max_length tokens) and at most N rows of generation."""
        self._max_batch_tokens = max(1, rows) * self.max_length
        self._max_gen_rows = max(1, rows)

    def batch_tokens(self, *, logits: bool = True) -> int:
        """The token budget of one forward pass (explicit, or from the free memory)."""
        if self._max_batch_tokens is not None:
            gpu_generation = not logits and self.device.type == "cuda"
            return max(int(self._max_batch_tokens), 1) * (GENERATION_CAP_FACTOR if gpu_generation else 1)
        return auto_batch_tokens(self.model, self.device, logits=logits, floor=self.max_length + 1)

    # -- log-likelihood ----------------------------------------------------------------------
    def _loglikelihood_tokens(
        self, requests: Sequence[_Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return list(super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs))
        prefixes: list[tuple[int, ...]] = []
        tails: list[list[int]] = []
        conts: list[list[int]] = []
        groups: dict[tuple[int, ...], list[int]] = {}
        singles: list[int] = []
        for index, (_key, context, continuation) in enumerate(requests):
            if not context or not continuation or len(continuation) > self.max_length:
                raise ValueError(f"Bad log-likelihood request {index}: empty context or continuation, or too long")
            inp = (list(context) + list(continuation))[-(self.max_length + 1) :][:-1]
            split = len(inp) - len(continuation)
            prefix = tuple(inp[:split])
            prefixes.append(prefix)
            tails.append(inp[split:])
            conts.append(list(continuation))
            if prefix:
                groups.setdefault(prefix, []).append(index)
            else:
                singles.append(index)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        budget = self.batch_tokens()
        with torch.inference_mode():
            self._run_shared(list(groups.items()), tails, conts, results, budget)
            self._run_plain(singles, tails, conts, results, budget)
        for (key, _c, _t), answer in zip(requests, results, strict=True):
            if key is not None and answer is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return [r for r in results if r is not None]

    def _score_rows(
        self, logits: torch.Tensor, rows: list[int], starts: list[int], conts: list[list[int]], results: list[Any]
    ) -> None:
        """Fill `results[row]` = (sum of log p(continuation), greedy): row `slot` of `logits`
        [rows, T, V] scores its continuation from position `starts[slot]` on."""
        for slot, row in enumerate(rows):
            cont = conts[row]
            lp = F.log_softmax(logits[slot, starts[slot] : starts[slot] + len(cont)].float(), dim=-1)
            target = torch.tensor(cont, dtype=torch.long, device=lp.device)
            picked = lp.gather(1, target.unsqueeze(1)).squeeze(1)
            results[row] = (float(picked.sum()), bool((lp.argmax(dim=-1) == target).all()))

    def _run_plain(
        self, rows: list[int], tails: list[list[int]], conts: list[list[int]], results: list[Any], budget: int
    ) -> None:
        """Requests with no prefix (rolling windows): one right-padded pass per batch, longest first."""
        order = sorted(rows, key=lambda r: len(tails[r]), reverse=True)
        start = 0
        while start < len(order):
            width = len(tails[order[start]])
            count = max(1, budget // max(width, 1))
            batch = order[start : start + count]
            start += len(batch)
            ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
            for slot, row in enumerate(batch):
                ids[slot, : len(tails[row])] = torch.tensor(tails[row])
            # right padding needs no mask: a causal model's real tokens never see the pads after them
            logits = self.model(input_ids=ids.to(self.device), use_cache=False).logits
            # a row's scored logits are its last len(cont) real positions
            starts = [len(tails[row]) - len(conts[row]) for row in batch]
            self._score_rows(logits, batch, starts, conts, results)

    def _run_shared(
        self,
        groups: list[tuple[tuple[int, ...], list[int]]],
        tails: list[list[int]],
        conts: list[list[int]],
        results: list[Any],
        budget: int,
    ) -> None:
        """Groups of requests sharing a prefix: prefixes once, then every tail on the repeated cache."""
        groups = sorted(groups, key=lambda g: (len(g[0]), max(len(tails[r]) for r in g[1])), reverse=True)
        start = 0
        while start < len(groups):
            width = len(groups[start][0])
            batch: list[tuple[tuple[int, ...], list[int]]] = []
            n_rows = tail_width = 0
            for prefix, rows in groups[start:]:
                t = max(tail_width, *(len(tails[r]) for r in rows))
                fits = shared_batch_fits(len(batch) + 1, n_rows + len(rows), width, t, budget)
                if batch and not fits:
                    break
                batch.append((prefix, rows))
                n_rows += len(rows)
                tail_width = t
            start += len(batch)
            self._shared_batch(batch, width, tail_width, tails, conts, results)

    def _shared_batch(
        self,
        batch: list[tuple[tuple[int, ...], list[int]]],
        width: int,
        tail_width: int,
        tails: list[list[int]],
        conts: list[list[int]],
        results: list[Any],
    ) -> None:
        device = self.device
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for slot, (prefix, _rows) in enumerate(batch):
            ids[slot, : len(prefix)] = torch.tensor(prefix)
            mask[slot, : len(prefix)] = 1
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, logits_to_keep=1)
        cache = out.cache
        owners = [slot for slot, (_p, rows) in enumerate(batch) for _r in rows]
        rows = [r for _p, rs in batch for r in rs]
        select = torch.tensor(owners, dtype=torch.long, device=device)
        if len(owners) != len(batch) or owners != list(range(len(batch))):
            cache.batch_select_indices(select)
        tail_ids = torch.full((len(rows), tail_width), self._pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(rows), tail_width), dtype=torch.long)
        positions = torch.zeros((len(rows), tail_width), dtype=torch.long)
        for slot, (row, owner) in enumerate(zip(rows, owners, strict=True)):
            n = len(tails[row])
            tail_ids[slot, :n] = torch.tensor(tails[row])
            tail_mask[slot, :n] = 1
            positions[slot] = len(batch[owner][0]) + torch.arange(tail_width)
        full_mask = torch.cat([mask.to(device)[select], tail_mask.to(device)], dim=1)
        logits = self.model(
            input_ids=tail_ids.to(device),
            attention_mask=full_mask,
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        ).logits
        self._score_rows(logits, rows, [0] * len(rows), conts, results)

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else int(self.eot_token_id)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Sum of log-likelihoods over each document's rolling windows (HFLM's windows), all at once."""
        windows: list[_Request] = []
        owner: list[int] = []
        for index, request in enumerate(requests):
            (text,) = request.args
            for window in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, list(window[0]), list(window[1])))
                owner.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=True)
        totals = [0.0] * len(requests)
        for index, (logprob, _greedy) in zip(owner, scores, strict=True):
            totals[index] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation --------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation in left-padded batches whose finished rows leave the batch."""
        if self.backend != "causal" or self.think_end_token is not None:
            return list(super().generate_until(requests, disable_tqdm=disable_tqdm))
        by_kwargs: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_kwargs.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        outputs: list[str | None] = [None] * len(requests)
        for indices in by_kwargs.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(
                kwargs.pop("until", None), eos=self.tok_decode(self.eot_token_id, skip_special_tokens=False)
            )
            max_gen = int(kwargs.pop("max_gen_toks"))
            kwargs.pop("temperature", None)
            if kwargs.pop("do_sample", False) or kwargs:  # sampling or options we do not implement
                texts = super().generate_until([requests[i] for i in indices], disable_tqdm=disable_tqdm)
                for i, text in zip(indices, texts, strict=True):
                    outputs[i] = text
                continue
            max_ctx = self.max_length - max_gen
            if max_ctx <= 0:
                raise ValueError(f"max_gen_toks {max_gen} leaves no room for a context in {self.max_length} positions")
            contexts = {i: self.tok_batch_encode([requests[i].args[0]], left_truncate_len=max_ctx,
                                                 truncation=self.truncation)[0][0].tolist() for i in indices}  # fmt: skip
            order = sorted(indices, key=lambda i: len(contexts[i]), reverse=True)
            per_row = (len(contexts[order[0]]) + max_gen) if order else 1
            rows = max(1, self.batch_tokens(logits=False) // per_row)
            if self._max_gen_rows is not None:
                rows = min(rows, self._max_gen_rows)
            with torch.inference_mode():
                for start in range(0, len(order), rows):
                    batch = order[start : start + rows]
                    texts = self._greedy([contexts[i] for i in batch], until=until, max_gen=max_gen)
                    for i, text in zip(batch, texts, strict=True):
                        outputs[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return [o if o is not None else "" for o in outputs]

    def _greedy(self, contexts: list[list[int]], *, until: list[str], max_gen: int) -> list[str]:
        """Greedy continuations of a batch of contexts, each cut at its first stop sequence."""
        device = self.device
        eos = int(self.eot_token_id)
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            ids[row, width - len(context) :] = torch.tensor(context)
            mask[row, width - len(context) :] = 1
        mask = mask.to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids.to(device), attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = out.cache
        next_pos = positions[:, -1] + 1
        lookback = max((len(s.encode()) for s in until if s), default=1) + 2
        generated: list[list[int]] = [[] for _ in contexts]
        produced = [0] * len(contexts)
        live = list(range(len(contexts)))  # batch slot -> row
        logits = out.logits[:, -1]
        for step in range(max_gen):
            tokens = logits.argmax(dim=-1).tolist()
            keep: list[int] = []
            for slot, row in enumerate(live):
                token = int(tokens[slot])
                produced[row] += 1
                if token == eos:
                    continue
                generated[row].append(token)
                tail = self.tokenizer.decode(generated[row][-lookback:], skip_special_tokens=False)
                if any(s and s in tail for s in until):
                    continue
                keep.append(slot)
            if not keep or step == max_gen - 1:
                break
            if len(keep) < len(live):
                select = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(select)
                mask, next_pos = mask[select], next_pos[select]
                live = [live[s] for s in keep]
                tokens = [tokens[s] for s in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            step_ids = torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
            out = self.model(
                input_ids=step_ids, attention_mask=mask, position_ids=next_pos.unsqueeze(1), cache=cache,
                use_cache=True,
            )  # fmt: skip
            cache = out.cache
            next_pos = next_pos + 1
            logits = out.logits[:, -1]
        self.generation_log.extend(zip(contexts, produced, strict=True))
        return [postprocess_generated_text(self.tok_decode(g), stop=until, think_end_token=None) for g in generated]
