"""GPU check (prepared, needs a CUDA machine): `registry merge --device cuda` on a Llama-2-7B shape.

1. Equality: fp32 inputs (Llama-2-7B width, `--check-layers` layers), TIES density 0.2, merged by
   `registry merge` on CPU and on CUDA: every output tensor must be bit-identical. The same config
   through `mergekit-yaml --cuda` is compared too (equal except where trimming ties at the cut).
2. Timing: bf16 inputs with `--layers` layers (16 by default: 3.5 B parameters per model),
   `registry merge --device cuda` against `mergekit-yaml --cuda` (fp32 and bf16 compute) and an
   I/O floor, alternating, `--runs` each; wall time and peak host RSS.

    .venv/bin/python bench/gpu_check.py --work /dev/shm/mergeling-gpu   # RAM-backed if it fits
    .venv/bin/python bench/gpu_check.py --layers 4 --runs 1              # a quicker pass

Disk: the bf16 inputs take 3 × 7 GB at 16 layers, the fp32 check inputs 3 × 4.3 GB at 2 layers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import BIN, IO_FLOOR, Shape, run_child, synthesize  # noqa: E402

LLAMA2_7B = {"hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32, "vocab": 32000}


def _config(models: dict[str, Path], *, dtype: str, out_dtype: str) -> dict[str, object]:
    return {
        "merge_method": "ties",
        "base_model": str(models["base"]),
        "dtype": dtype,
        "out_dtype": out_dtype,
        "models": [{"model": str(models[m]), "parameters": {"weight": 1.0, "density": 0.2}} for m in ("ft1", "ft2")],
        "parameters": {"normalize": True},
    }


def _load(path: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _compare(a: Path, b: Path) -> tuple[int, int]:
    """(differing entries, total entries) between two merged checkpoints, bit for bit."""
    import torch

    ta, tb = _load(a), _load(b)
    if ta.keys() != tb.keys():
        raise SystemExit(f"tensor names differ between {a} and {b}")
    differ = total = 0
    for name, x in ta.items():
        y = tb[name]
        bits = torch.int32 if x.element_size() == 4 else torch.int16
        differ += int((x.view(bits) != y.view(bits)).sum())
        total += x.numel()
    return differ, total


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "_work" / "gpu")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--check-layers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-mergekit", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU (run it on the GPU machine)")
    print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    env = dict(__import__("os").environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # 1. fp32 equality, CPU vs CUDA (and mergekit --cuda)
    fp32 = synthesize(args.work / "fp32", Shape(layers=args.check_layers, **LLAMA2_7B), dtype="float32")
    config = args.work / "fp32.yml"
    config.write_text(json.dumps(_config(fp32, dtype="float32", out_dtype="float32")))
    outs = {d: args.work / f"fp32-out-{d}" for d in ("cpu", "cuda", "mergekit")}
    for path in outs.values():
        shutil.rmtree(path, ignore_errors=True)
    for device in ("cpu", "cuda"):
        wall, _ = run_child(
            [str(BIN / "registry"), "--quiet", "merge", str(config), "--out", str(outs[device]), "--device", device],
            env,
            logs / f"fp32-{device}.log",
        )
        print(f"fp32 check: registry merge --device {device}: {wall:.1f} s", flush=True)
    differ, total = _compare(outs["cpu"], outs["cuda"])
    print(f"fp32 check: CPU vs CUDA: {differ} of {total} entries differ ({'PASS' if differ == 0 else 'FAIL'})")
    if not args.skip_mergekit:
        run_child([str(BIN / "mergekit-yaml"), str(config), str(outs["mergekit"]), "--cuda"], env, logs / "fp32-mk.log")
        differ_mk, _ = _compare(outs["cuda"], outs["mergekit"])
        print(
            f"fp32 check: ours (CUDA) vs mergekit --cuda: {differ_mk} of {total} entries differ "
            "(allowed only at trimming ties)"
        )

    # 2. timing on bf16 inputs
    models = synthesize(args.work / "bf16", Shape(layers=args.layers, **LLAMA2_7B), dtype="bfloat16")
    out = args.work / "bf16-out"
    commands: dict[str, list[str]] = {}
    for dtype in ("float32", "bfloat16"):
        path = args.work / f"bf16-{dtype}.yml"
        path.write_text(json.dumps(_config(models, dtype=dtype, out_dtype="bfloat16")))
        if dtype == "float32":
            commands["registry merge --device cuda"] = [
                str(BIN / "registry"),
                "--quiet",
                "merge",
                str(path),
                "--out",
                str(out),
                "--device",
                "cuda",
            ]
        if not args.skip_mergekit:
            commands[f"mergekit --cuda ({dtype})"] = [str(BIN / "mergekit-yaml"), str(path), str(out), "--cuda"]
    commands["I/O floor (CPU)"] = [
        sys.executable,
        "-c",
        IO_FLOOR,
        *(str(models[m]) for m in ("base", "ft1", "ft2")),
        str(out),
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for run in range(args.runs):
        for name, cmd in commands.items():
            shutil.rmtree(out, ignore_errors=True)
            wall, rss = run_child(cmd, env, logs / f"{len(results[name])}-{name.split()[0]}.log")
            results[name].append((wall, rss))
            print(f"run {run + 1}: {name:32s} {wall:7.1f} s  {rss:5.2f} GiB", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nLlama-2-7B shape, {args.layers} layers, bf16 inputs; medians of {args.runs}")
    for name, runs in results.items():
        print(
            f"{name:32s} {statistics.median(w for w, _ in runs):8.1f} s "
            f"{statistics.median(m for _, m in runs):6.2f} GiB"
        )


if __name__ == "__main__":
    main()
