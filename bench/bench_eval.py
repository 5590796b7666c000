"""How far `registry eval` is from the cost of its forward passes (issue 19, item 5).

For one suite and one model, per task:
- harness: `registry.evaluate.runner.run_task` (lm-eval under our runner), model already loaded;
- floor: the same scored tokens with no harness: the exact token sequences lm-eval scores (its own
  requests, encoded by its own model wrapper), run as plain batched forward passes, longest first,
  same batch size; for generation tasks, the same number of generated tokens per document (counted
  from the harness's own outputs) with the KV cache (`model.generate` with that many new tokens,
  batched, no stop sequences).

The ratio harness / floor is what the harness costs on top of the model. Nothing is cached.

    .venv/bin/python bench/bench_eval.py --data-dir ../shared/data --limit 10
    .venv/bin/python bench/bench_eval.py --model lab-out/run1/sft --suite recipes/eval/ben_Beng.yaml --limit 50 --json

Without --model a random model of the lab's default shape (hidden 128, 4 layers, 8192 ids would need
the lab tokenizer; here the tiny byte-level tokenizer, 320 ids) is written to a temporary directory:
random weights generate the full 256 tokens on MGSM (no stop sequence is ever produced), which is
the worst case for generation. Timings are wall clock on whatever machine runs it; say which.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _requests(planned: Any, data_dir: Path, lm: Any) -> tuple[str, list[Any]]:
    """The task's lm-eval instances, built exactly as `run_task` builds them."""
    from registry.evaluate.runner import FEWSHOT_SEED, _load_task

    config = planned.spec.to_lm_eval(data_dir=data_dir, num_fewshot=planned.num_fewshot)
    loaded = _load_task(planned, config)
    task = next(iter(loaded["tasks"].values()))
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    task.build_all_requests(limit=planned.limit, rank=0, world_size=1)
    return task.OUTPUT_TYPE, list(task.instances)


def _forward_floor(lm: Any, sequences: list[list[int]], batch_size: int) -> tuple[float, int]:
    """Seconds for plain batched forward passes over `sequences` (right-padded), and tokens scored."""
    import torch

    model = lm.model
    ordered = sorted(sequences, key=len, reverse=True)
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ordered), batch_size):
            batch = ordered[i : i + batch_size]
            width = len(batch[0])
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            torch.log_softmax(logits.float(), dim=-1)  # what scoring a continuation needs at least
    return time.perf_counter() - started, sum(len(s) for s in sequences)


def _scored_sequences(lm: Any, output_type: str, instances: list[Any]) -> list[list[int]]:
    """The token sequences lm-eval runs the model on for log-likelihood requests."""
    from lm_eval import utils

    sequences: list[list[int]] = []
    if output_type == "loglikelihood_rolling":
        for inst in instances:
            (text,) = inst.args
            tokens = lm.tok_encode(text, add_special_tokens=False)  # the runner scores without a second BOS
            for context, target in utils.get_rolling_token_windows(
                token_list=tokens, prefix_token=lm.prefix_token_id, max_seq_len=lm.max_length, context_len=1
            ):
                sequences.append((list(context) + list(target))[-(lm.max_length + 1) : -1] or [lm.prefix_token_id])
        return sequences
    for inst in instances:
        context, continuation = inst.args[:2]
        context_enc, continuation_enc = lm._encode_pair(context, continuation)
        sequences.append((context_enc + continuation_enc)[-(lm.max_length + 1) : -1])
    return sequences


def _generation_floor(lm: Any, instances: list[Any], outputs: list[str], batch_size: int) -> tuple[float, int]:
    """Seconds to generate, with the KV cache and no stop sequences, as many tokens as the harness did."""
    import torch

    model, tokenizer = lm.model, lm.tokenizer
    jobs = []
    for inst, text in zip(instances, outputs, strict=True):
        max_gen = int(inst.args[1].get("max_gen_toks", lm.max_gen_toks))
        # HFLM keeps the last max_length - max_gen_toks context tokens (left truncation): the same here.
        context = lm.tok_encode(inst.args[0])[-(lm.max_length - max_gen) :]
        new = max(1, len(lm.tok_encode(text, add_special_tokens=False)))
        jobs.append((context, new))
    jobs.sort(key=lambda j: (j[1], len(j[0])), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(jobs), batch_size):
            batch = jobs[i : i + batch_size]
            width = max(len(c) for c, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (context, _) in enumerate(batch):  # left padding, as batched generation needs
                ids[row, width - len(context) :] = torch.tensor(context)
                mask[row, width - len(context) :] = 1
            new = max(n for _, n in batch)
            model.generate(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=pad, use_cache=True,
            )  # fmt: skip
    return time.perf_counter() - started, sum(n for _, n in jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a random tiny Llama)")
    parser.add_argument("--suite", type=Path, default=ROOT / "recipes" / "eval" / "ben_Beng.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    from registry.evaluate.runner import load_lm, plan_suite, run_task
    from registry.evaluate.suite import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from registry.lab.tiny import build_tiny_llama

            model_dir = build_tiny_llama(Path(tmp) / "model", seed=0, hidden_size=128, intermediate_size=384,
                                         num_layers=4, num_heads=4, num_kv_heads=4)  # fmt: skip
        suite = load_suite(args.suite)
        planned = plan_suite(suite, tasks_dir=ROOT / "recipes" / "tasks", data_dir=args.data_dir, limit=args.limit)
        lm = load_lm(model_dir, device=args.device, batch_size=args.batch_size)
        rows = []
        for item in planned:
            started = time.perf_counter()
            run_task(lm, item, data_dir=args.data_dir, progress=False)
            harness = time.perf_counter() - started
            output_type, instances = _requests(item, args.data_dir, lm)
            if output_type == "generate_until":
                outputs = lm.generate_until(instances, disable_tqdm=True)
                floor, tokens = _generation_floor(lm, instances, outputs, args.batch_size)
            else:
                floor, tokens = _forward_floor(lm, _scored_sequences(lm, output_type, instances), args.batch_size)
            rows.append({"task": item.spec.name, "type": output_type, "requests": len(instances), "tokens": tokens,
                         "harness_s": round(harness, 3), "floor_s": round(floor, 3),
                         "ratio": round(harness / floor, 2) if floor > 0 else None})  # fmt: skip
    total_h, total_f = sum(r["harness_s"] for r in rows), sum(r["floor_s"] for r in rows)
    summary = {"model": str(args.model or "random tiny Llama (hidden 128, 4 layers)"), "limit": args.limit,
               "batch_size": args.batch_size, "device": args.device, "tasks": rows,
               "harness_s": round(total_h, 3), "floor_s": round(total_f, 3),
               "ratio": round(total_h / total_f, 2) if total_f else None}  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'task':<22} {'type':<24} {'req':>5} {'tokens':>8} {'harness s':>10} {'floor s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['task']:<22} {r['type']:<24} {r['requests']:>5} {r['tokens']:>8} {r['harness_s']:>10.2f} "
              f"{r['floor_s']:>9.2f} {r['ratio'] or 0:>6.2f}")  # fmt: skip
    print(f"{'suite':<22} {'':<24} {'':>5} {'':>8} {total_h:>10.2f} {total_f:>9.2f} {summary['ratio'] or 0:>6.2f}")


if __name__ == "__main__":
    main()
