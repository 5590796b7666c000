"""How far `registry eval` is from the cost of its forward passes (issue 19, item 5).

For one suite and one model, per task, alternating in one run (harness, floor, harness, floor, ...):
- harness: `registry.evaluate.runner.run_task` (lm-eval builds the requests and the metrics; the
  model is `scoring.FastLM`, or lm-eval's stock HFLM with `--harness hflm`), model already loaded;
- floor: the same model work with no harness, written plainly here with the same token budget:
  - multiple choice: each question's context once (right-padded batch, KV cache kept), then every
    choice's continuation tokens on the repeated cache (HFLM's own encoding and left truncation);
  - rolling log-likelihood: every window of every document, one right-padded pass, longest first;
  - generation: the prompt once, then exactly as many single-token steps with the KV cache as the
    harness generated for that problem (its own count), rows leaving the batch when done, no stop
    sequence checks. Under `--harness hflm` the count comes from a FastLM run (same greedy tokens).
  Log-softmax over every scored position is included (scoring needs it).

The ratio harness / floor is what the harness costs on top of the model. Nothing is cached.

    .venv/bin/python bench/bench_eval.py --limit 20 --rounds 2
    .venv/bin/python bench/bench_eval.py --model lab-out/run1/sft --limit 50 --json
    .venv/bin/python bench/bench_eval.py --harness hflm --limit 20   # lm-eval's own HFLM, for "before"

Without --model a random Llama of the lab's shape (hidden 128, 4 layers, 4 heads, MLP 384, 1024
positions, 8192 ids) is written to a temporary directory with a lab BPE tokenizer trained on the
data's English and target-language `mono/` text (so sequence lengths are the lab's);
`--tokenizer bytes` uses the tests' byte-level tokenizer (320 ids, 512 positions) instead. Random
weights never produce MGSM's stop sequences, so every problem generates its full 256 tokens (the
worst case for generation). Timings are wall clock on whatever machine runs it: say which.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build_lab_shape(out_dir: Path, data_dir: Path, language: str) -> Path:
    """A random Llama of the lab's default shape with a lab tokenizer trained on `data_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from registry.lab.corpora import load_corpora
    from registry.lab.tokenizer import save_tokenizer, train_tokenizer

    langs = (language,) if language != "eng_Latn" else ("ben_Beng",)
    corpora = load_corpora(data_dir, languages=langs, seed=0)
    texts = list(corpora.english) + [t for docs in corpora.target.values() for t in docs]
    tokenizer = train_tokenizer(texts, vocab_size=8192, model_max_length=1024)
    config = LlamaConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out_dir))
    save_tokenizer(tokenizer, out_dir)
    return out_dir


def _requests(planned: Any, data_dir: Path) -> tuple[str, list[Any]]:
    """The task's lm-eval instances, built exactly as `run_task` builds them."""
    from registry.evaluate.runner import FEWSHOT_SEED, _load_task

    config = planned.spec.to_lm_eval(data_dir=data_dir, num_fewshot=planned.num_fewshot)
    loaded = _load_task(planned, config)
    task = next(iter(loaded["tasks"].values()))
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    task.build_all_requests(limit=planned.limit, rank=0, world_size=1)
    return task.OUTPUT_TYPE, list(task.instances)


def _pad_right(rows: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def scoring_work(lm: Any, output_type: str, instances: list[Any]) -> list[tuple[list[int], list[list[int]]]]:
    """(shared prefix, [tail per scored sequence]) per question: the tokens the model must see.

    Multiple choice: the prefix is HFLM's input minus the continuation's positions; questions whose
    choices are cut differently from the left (too long) become one item per choice. Rolling: an
    empty prefix and one tail per window.
    """
    from lm_eval import utils

    if output_type == "loglikelihood_rolling":
        work = []
        for inst in instances:
            (text,) = inst.args
            tokens = lm.tok_encode(text)  # the runner scores without a second BOS (add_bos_token off)
            for context, target in map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=tokens, prefix_token=lm.prefix_token_id, max_seq_len=lm.max_length, context_len=1
                ),
            ):
                work.append(([], [(list(context) + list(target))[:-1]]))  # fmt: skip
        return work
    groups: dict[tuple[int, ...], list[list[int]]] = {}
    for inst in instances:
        context, continuation = inst.args[:2]
        context_enc, continuation_enc = lm._encode_pair(context, continuation)
        inp = (context_enc + continuation_enc)[-(lm.max_length + 1) : -1]
        split = len(inp) - len(continuation_enc)
        groups.setdefault(tuple(inp[:split]), []).append(inp[split:])
    return [(list(p), tails) for p, tails in groups.items()]


def scoring_floor(lm: Any, work: list[tuple[list[int], list[list[int]]]], budget: int) -> float:
    """Seconds for the prefixes once (cache kept) and every tail on the repeated cache, batched by
    `budget` padded tokens, with the log-softmax over the tails."""
    import torch

    from registry.evaluate.scoring import shared_batch_fits

    model, device = lm.model, lm.device
    pad = lm.tokenizer.pad_token_id or 0
    work = sorted(work, key=lambda w: (len(w[0]), max(len(t) for t in w[1])), reverse=True)
    started = time.perf_counter()
    with torch.inference_mode():
        i = 0
        while i < len(work):
            width = len(work[i][0])
            batch, rows, tail_w = [], 0, 0
            for item in work[i:]:
                t = max(tail_w, *(len(x) for x in item[1]))
                if batch and not shared_batch_fits(len(batch) + 1, rows + len(item[1]), max(width, 1), t, budget):
                    break
                batch.append(item)
                rows += len(item[1])
                tail_w = t
            i += len(batch)
            tails = [t for _p, ts in batch for t in ts]
            tail_ids, tail_mask = _pad_right(tails, pad)
            if width == 0:
                logits = model(input_ids=tail_ids.to(device), use_cache=False).logits
            else:
                ids, mask = _pad_right([p for p, _ts in batch], pad)
                cache = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                              logits_to_keep=1).cache  # fmt: skip
                owners = torch.tensor([k for k, (_p, ts) in enumerate(batch) for _t in ts], device=device)
                cache.batch_select_indices(owners)
                lengths = torch.tensor([len(p) for p, _ts in batch], device=device)[owners]
                positions = lengths.unsqueeze(1) + torch.arange(tail_ids.shape[1], device=device)
                full = torch.cat([mask.to(device)[owners], tail_mask.to(device)], dim=1)
                logits = model(input_ids=tail_ids.to(device), attention_mask=full, position_ids=positions,
                               cache=cache, use_cache=True).logits  # fmt: skip
            torch.log_softmax(logits.float(), dim=-1)
    return time.perf_counter() - started


def generation_floor(lm: Any, jobs: list[tuple[list[int], int]], rows_per_batch: int) -> float:
    """Seconds to generate `n` tokens after each context: one prompt pass, n - 1 cached steps,
    greedy, rows leaving the batch when their count is reached (longest prompts first)."""
    import torch

    model, device = lm.model, lm.device
    pad = lm.tokenizer.pad_token_id or 0
    jobs = sorted(jobs, key=lambda j: len(j[0]), reverse=True)
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(jobs), rows_per_batch):
            batch = jobs[i : i + rows_per_batch]
            width = max(len(c) for c, _n in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (c, _n) in enumerate(batch):  # left padding
                ids[r, width - len(c) :] = torch.tensor(c)
                mask[r, width - len(c) :] = 1
            mask = mask.to(device)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=pos, use_cache=True,
                        logits_to_keep=1)  # fmt: skip
            cache, left = out.cache, [n for _c, n in batch]
            nxt, step_pos = out.logits[:, -1].argmax(-1), pos[:, -1] + 1
            for step in range(1, max(left)):
                keep = [r for r, n in enumerate(left) if n > step]
                if len(keep) < len(left):
                    sel = torch.tensor(keep, device=device)
                    cache.batch_select_indices(sel)
                    mask, nxt, step_pos = mask[sel], nxt[sel], step_pos[sel]
                    left = [left[r] for r in keep]
                mask = torch.cat([mask, mask.new_ones((len(left), 1))], dim=1)
                out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=step_pos.unsqueeze(1),
                            cache=cache, use_cache=True)  # fmt: skip
                cache, nxt, step_pos = out.cache, out.logits[:, -1].argmax(-1), step_pos + 1
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a random Llama of the lab's shape)")
    parser.add_argument("--tokenizer", choices=("lab", "bytes"), default="lab", help="for the random model")
    parser.add_argument("--suite", type=Path, default=ROOT / "recipes" / "eval" / "ben_Beng.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--task", action="append", help="only these tasks of the suite (repeat)")
    parser.add_argument("--rounds", type=int, default=2, help="harness/floor alternations per task")
    parser.add_argument("--batch-size", type=int, default=0, help="rows (runner.load_lm); 0: from free memory")
    parser.add_argument("--harness", choices=("fast", "hflm"), default="fast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from registry.evaluate.runner import load_lm, plan_suite, run_task
    from registry.evaluate.suite import load_suite

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        suite = load_suite(args.suite)
        if model_dir is None and args.tokenizer == "lab":
            model_dir = build_lab_shape(Path(tmp) / "model", args.data_dir, suite.language)
        elif model_dir is None:
            from registry.lab.tiny import build_tiny_llama

            model_dir = build_tiny_llama(Path(tmp) / "model", seed=0, hidden_size=128, intermediate_size=384,
                                         num_layers=4, num_heads=4, num_kv_heads=4)  # fmt: skip
        planned = plan_suite(suite, tasks_dir=ROOT / "recipes" / "tasks", data_dir=args.data_dir, limit=args.limit)
        if args.task:
            planned = [p for p in planned if p.spec.name in args.task]
        lm = load_lm(model_dir, device=args.device, batch_size=args.batch_size or None)
        if args.harness == "hflm":
            from lm_eval.models.huggingface import HFLM

            fast = lm
            lm = HFLM(pretrained=fast.model, tokenizer=fast.tokenizer, batch_size=args.batch_size or 8)
            lm.generation_log = []
        else:
            fast = lm
        budget = fast.batch_tokens()
        rows = []
        for item in planned:
            output_type, instances = _requests(item, args.data_dir)
            harness_s, floor_s = [], []
            work = None if output_type == "generate_until" else scoring_work(fast, output_type, instances)
            for _round in range(args.rounds):
                lm.generation_log = []
                started = time.perf_counter()
                result = run_task(lm, item, data_dir=args.data_dir, progress=False)
                harness_s.append(time.perf_counter() - started)
                if output_type == "generate_until":
                    if lm is not fast:  # HFLM keeps no log: FastLM's greedy run gives the same tokens
                        fast.generation_log = []
                        fast.generate_until(instances, disable_tqdm=True)
                    jobs = list(fast.generation_log)
                    gen_rows = fast._max_gen_rows or max(1, fast.batch_tokens(logits=False) // (
                        max(len(c) for c, _n in jobs) + max(n for _c, n in jobs)))  # fmt: skip
                    floor_s.append(generation_floor(fast, jobs, gen_rows))
                    tokens = sum(n for _c, n in jobs)
                else:
                    assert work is not None
                    floor_s.append(scoring_floor(fast, work, budget))
                    tokens = sum(len(p) + sum(len(t) for t in ts) for p, ts in work)
            h, f = statistics.median(harness_s), statistics.median(floor_s)
            rows.append({"task": item.spec.name, "type": output_type, "requests": len(instances), "tokens": tokens,
                         "harness_s": round(h, 3), "floor_s": round(f, 3), "ratio": round(h / f, 2),
                         "round_ratios": [round(a / b, 2) for a, b in zip(harness_s, floor_s, strict=True)],
                         "metrics": {k: round(v.value, 4) for k, v in result.metrics.items()}})  # fmt: skip
    total_h, total_f = sum(r["harness_s"] for r in rows), sum(r["floor_s"] for r in rows)
    summary = {"model": str(args.model or f"random Llama, lab shape, {args.tokenizer} tokenizer"),
               "harness": args.harness, "limit": args.limit, "rounds": args.rounds,
               "batch_size": args.batch_size or "auto", "token_budget": budget, "device": args.device,
               "threads": __import__("torch").get_num_threads(),
               "load_avg_start": [round(x, 1) for x in load_start],
               "load_avg_end": [round(x, 1) for x in os.getloadavg()], "tasks": rows,
               "harness_s": round(total_h, 3), "floor_s": round(total_f, 3),
               "ratio": round(total_h / total_f, 2) if total_f else None}  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'task':<20} {'type':<22} {'req':>5} {'tokens':>8} {'harness s':>10} {'floor s':>8} {'ratio':>6}  rounds")
    for r in rows:
        print(f"{r['task']:<20} {r['type']:<22} {r['requests']:>5} {r['tokens']:>8} {r['harness_s']:>10.2f} "
              f"{r['floor_s']:>8.2f} {r['ratio']:>6.2f}  {r['round_ratios']}")  # fmt: skip
    print(f"{'suite':<20} {'':<22} {'':>5} {'':>8} {total_h:>10.2f} {total_f:>8.2f} {summary['ratio'] or 0:>6.2f}")
    print(f"load average {summary['load_avg_start']} -> {summary['load_avg_end']}; token budget {budget}")


if __name__ == "__main__":
    main()
