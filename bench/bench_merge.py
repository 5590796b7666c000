"""Benchmark: `registry merge` against mergekit 0.1.5 on a TinyLlama-1.1B-shaped bf16 model.

Synthesizes base + two fine-tunes (base + small seeded deltas) as sharded safetensors, written
tensor by tensor (no torch.nn model), then runs, as separate processes and alternating:

- `registry merge CONFIG --out ...` (ours),
- `mergekit-yaml CONFIG ...` (the peer; the same config file),
- an I/O floor: `import torch`, then read every byte of the three inputs (`preadv` into buffers
  reused by size) and write one output of the same size (`pwrite`): the least any merge does.
  (The floor recorded before 2026-11-27 21:30 used safetensors' `get_tensor`, which maps the file
  and reads nothing until touched: it read only the base, one input of three.)

at least `--runs` times each, recording wall time and the child's peak RSS (`os.wait4`). Prints a
table of medians and the ratios. Nothing here is imported by the product.

    .venv/bin/python bench/bench_merge.py                       # full size, 3 runs each (~15 min)
    .venv/bin/python bench/bench_merge.py --layers 2 --runs 1   # a quick smoke run
    .venv/bin/python bench/bench_merge.py --methods ties,della,sce --layers 6 --runs 1 --skip-mergekit
        # each method alternated with the I/O floor: its ratio to the floor
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Shape:
    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    vocab: int = 32000

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        out = [("model.embed_tokens.weight", (self.vocab, self.hidden))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [
                (p + "self_attn.q_proj.weight", (self.hidden, self.hidden)),
                (p + "self_attn.k_proj.weight", (kv, self.hidden)),
                (p + "self_attn.v_proj.weight", (kv, self.hidden)),
                (p + "self_attn.o_proj.weight", (self.hidden, self.hidden)),
                (p + "mlp.gate_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.up_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.down_proj.weight", (self.hidden, self.intermediate)),
                (p + "input_layernorm.weight", (self.hidden,)),
                (p + "post_attention_layernorm.weight", (self.hidden,)),
            ]
        return out + [("model.norm.weight", (self.hidden,)), ("lm_head.weight", (self.vocab, self.hidden))]

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


def synthesize(
    root: Path,
    shape: Shape,
    *,
    dtype: str = "bfloat16",
    scale: float = 0.002,
    shard_bytes: int = 2 << 30,
    device: str = "cpu",
) -> dict[str, Path]:
    """Write base, ft1, ft2 under root (skipped when already there); returns their paths.

    Each tensor of the three models is made in one go (`device="cuda"` draws the random numbers
    on the GPU: seconds for a 7B shape instead of minutes).
    """
    import torch
    from safetensors.torch import save_file

    from registry.lab.tiny import build_tiny_tokenizer

    paths = {name: root / name for name in ("base", "ft1", "ft2")}
    stamp = root / "shape.json"
    wanted = {**shape.__dict__, "dtype": dtype, "scale": scale, "version": 2}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return paths
    shutil.rmtree(root, ignore_errors=True)
    tokenizer = build_tiny_tokenizer(vocab_size=shape.vocab)
    for path in paths.values():
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({**shape.config(), "dtype": dtype}, indent=2))
        tokenizer.save_pretrained(str(path))
    # Shard layout first (it depends only on the shapes), so each shard is written once full.
    size_of = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    layout: list[list[str]] = [[]]
    used = 0
    for tensor_name, dims in shape.tensors():
        nbytes = math.prod(dims) * size_of
        if used and used + nbytes > shard_bytes:
            layout.append([])
            used = 0
        layout[-1].append(tensor_name)
        used += nbytes
    files = [f"model-{i + 1:05d}-of-{len(layout):05d}.safetensors" for i in range(len(layout))]
    dims_of = dict(shape.tensors())
    gen = torch.Generator(device=device).manual_seed(0)
    totals = dict.fromkeys(paths, 0)
    for file, names in zip(files, layout, strict=True):
        shard: dict[str, dict[str, torch.Tensor]] = {name: {} for name in paths}
        for tensor_name in names:
            base = torch.randn(dims_of[tensor_name], generator=gen, device=device) * 0.02
            for name in paths:
                t = base if name == "base" else base + scale * torch.randn(base.shape, generator=gen, device=device)
                shard[name][tensor_name] = t.to(getattr(torch, dtype)).cpu()
                totals[name] += shard[name][tensor_name].nbytes
        for name, path in paths.items():
            save_file(shard[name], str(path / file), metadata={"format": "pt"})
        del shard
    weight_map = {n: file for file, names in zip(files, layout, strict=True) for n in names}
    for name, path in paths.items():
        index = {"metadata": {"total_size": totals[name]}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        print(f"  wrote {path} ({totals[name] / 1e9:.2f} GB)", flush=True)
    stamp.write_text(json.dumps(wanted))
    return paths


IO_FLOOR_FN = r"""
import json, os
from pathlib import Path


def io_floor(inputs, out, buffers):
    out.mkdir(parents=True)
    index = json.loads((inputs[0] / "model.safetensors.index.json").read_text())["weight_map"]
    for file in sorted(set(index.values())):
        fds = [os.open(p / file, os.O_RDONLY) for p in inputs]
        size = int.from_bytes(os.pread(fds[0], 8, 0), "little")
        header = os.pread(fds[0], 8 + size, 0)
        sink = os.open(out / file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.pwrite(sink, header, 0)
        for name, info in json.loads(header[8:]).items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            for i, fd in enumerate(fds):  # every byte of all three, into buffers reused by size
                buf = buffers.get((i, end - begin))
                if buf is None:
                    buf = buffers[(i, end - begin)] = bytearray(end - begin)
                view, done = memoryview(buf), 0
                while done < len(buf):
                    done += os.preadv(fd, [view[done:]], 8 + size + begin + done)
            view, done = memoryview(buffers[(0, end - begin)]), 0
            while done < len(view):
                done += os.pwrite(sink, view[done:], 8 + size + begin + done)
        os.close(sink)
        for fd in fds:
            os.close(fd)
"""

IO_FLOOR = (
    "import sys\nimport torch  # every Python merge tool pays for importing it, ours included\n"
    + IO_FLOOR_FN
    + "\nio_floor([Path(p) for p in sys.argv[1:4]], Path(sys.argv[4]), {})\n"
)

# Both in one warm process (Python, torch, the kernels loaded; one merge and one floor run first), alternating.
INPROC = (
    IO_FLOOR_FN
    + r"""
import shutil, statistics, sys, time
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import load_recipe

config, runs, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
inputs = [Path(p) for p in sys.argv[4:7]]
buffers, times = {}, {"registry merge": [], "I/O floor": []}
for run in range(runs + 1):
    for name in times:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        if name == "I/O floor":
            io_floor(inputs, out, buffers)
        else:
            run_merge(plan_merge(load_recipe(config)), out=out, device="cpu", progress=False)
        if run:  # run 0 warms up
            times[name].append(time.perf_counter() - start)
shutil.rmtree(out, ignore_errors=True)
print(json.dumps({name: statistics.median(values) for name, values in times.items()} | {"all": times}))
"""
)


LAST_CPU = [0.0]


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of one child process; raises when it fails. Its CPU seconds (user +
    system) are kept in `LAST_CPU[0]`: on a shared machine they vary far less than the wall time."""
    start = time.perf_counter()
    with log.open("w") as sink:
        child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed ({status}); see {log}")
    return wall, usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "_work", help="scratch directory")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--mergekit-dtype", default="bfloat16", help="mergekit compute dtype (its `dtype`)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every child (0: unset)")
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument(
        "--inproc-runs",
        type=int,
        default=0,
        help="also time run_merge and the I/O floor alternating in one warm process (no start-up costs)",
    )
    parser.add_argument(
        "--compare-unfused", action="store_true", help="also run registry merge with MERGELING_FUSED=0 (the torch path)"
    )
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated methods: each `registry merge` alternated with the I/O floor, ratios printed (then exit)",
    )
    args = parser.parse_args()
    if args.methods:
        bench_methods(args, [m.strip() for m in args.methods.split(",") if m.strip()])
        return

    shape = Shape(layers=args.layers)
    print(f"synthesizing {shape} under {args.work}/models", flush=True)
    models = synthesize(args.work / "models", shape)
    config = {
        "merge_method": "ties",
        "base_model": str(models["base"]),
        "dtype": args.mergekit_dtype,
        "out_dtype": "bfloat16",
        "models": [
            {"model": str(models[m]), "parameters": {"weight": 1.0, "density": args.density}} for m in ("ft1", "ft2")
        ],
        "parameters": {"normalize": True},
    }
    config_path = args.work / "ties.yml"
    config_path.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = args.work / "out"
    commands = {
        "registry merge": [
            str(BIN / "registry"),
            "--quiet",
            "merge",
            str(config_path),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        "I/O floor": [sys.executable, "-c", IO_FLOOR, *(str(models[m]) for m in ("base", "ft1", "ft2")), str(out)],
    }
    if args.compare_unfused:
        commands["registry (torch path)"] = ["env", "MERGELING_FUSED=0", *commands["registry merge"]]
    if not args.skip_mergekit:
        commands["mergekit-yaml"] = [str(BIN / "mergekit-yaml"), str(config_path), str(out), "--lazy-unpickle"]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for cmd in commands.values():  # one untimed round: the kernels' first build, cold page cache
        shutil.rmtree(out, ignore_errors=True)
        run_child(cmd, env, args.work / "warmup.log")
    load = os.getloadavg()
    for run in range(args.runs):
        for name, cmd in commands.items():
            shutil.rmtree(out, ignore_errors=True)
            log = args.work / f"{''.join(ch for ch in name if ch.isalnum())}.log"
            wall, rss = run_child(cmd, env, log)
            results[name].append((wall, rss))
            print(
                f"run {run + 1}: {name:15s} {wall:7.1f} s  {rss:5.2f} GiB  (load {os.getloadavg()[0]:.1f})", flush=True
            )
    shutil.rmtree(out, ignore_errors=True)

    med = {n: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for n, r in results.items()}
    print(f"\nmedians of {args.runs} runs; load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(f"{'what':16s} {'wall s':>8s} {'peak RSS GiB':>13s}")
    for name, (wall, rss) in med.items():
        print(f"{name:16s} {wall:8.1f} {rss:13.2f}")
    ours, floor = med["registry merge"], med["I/O floor"]
    print(f"\nours / I/O floor: time {ours[0] / floor[0]:.2f}x (target <= 2x)")
    if "registry (torch path)" in med:
        torch_path = med["registry (torch path)"]
        print(f"torch path / I/O floor: {torch_path[0] / floor[0]:.2f}x; fused speed-up {torch_path[0] / ours[0]:.2f}x")
    if "mergekit-yaml" in med:
        theirs = med["mergekit-yaml"]
        print(
            f"mergekit / ours: time {theirs[0] / ours[0]:.2f}x faster (target >= 2x), "
            f"RSS ours/mergekit {ours[1] / theirs[1]:.2f} (target <= 0.5)"
        )
    if args.inproc_runs:
        proc = subprocess.run(
            [sys.executable, "-c", INPROC, str(config_path), str(args.inproc_runs), str(out)]
            + [str(models[m]) for m in ("base", "ft1", "ft2")],
            capture_output=True, text=True, env=env, cwd=REPO, check=True,
        )  # fmt: skip
        warm = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\nin one warm process, {args.inproc_runs} runs each alternating: {warm['all']}")
        print(
            f"run_merge {warm['registry merge']:.2f} s, I/O floor {warm['I/O floor']:.2f} s (medians): "
            f"{warm['registry merge'] / warm['I/O floor']:.2f}x"
        )


def method_config(method: str, models: dict[str, Path], density: float) -> dict[str, object]:
    """A config of `method` over the synthesized models, with the parameters it needs."""
    from registry.merge.methods import get_method

    spec = get_method(method)
    inputs = ["ft1"] if spec.max_inputs == 1 else ["ft1", "ft2"]
    per_model: dict[str, float] = {"weight": 1.0} if spec.uses_weight else {}
    if spec.uses_density:
        per_model["density"] = 0.5 if method.startswith("della") else density
    config: dict[str, object] = {
        "merge_method": method,
        "dtype": "float32",
        "out_dtype": "bfloat16",
        "models": [{"model": str(models[m]), **({"parameters": per_model} if per_model else {})} for m in inputs],
    }
    if spec.needs_base:
        config["base_model"] = str(models["base"])
    extra = {"slerp": {"t": 0.4}, "nearswap": {"t": 0.001}, "ties_sv": {"slack": 0.05}}
    if method in extra:
        config["parameters"] = extra[method]
    if method == "ties_sv":
        config["models"][1]["role"] = "sft"  # type: ignore[index]
    return config


def bench_methods(args: argparse.Namespace, methods: list[str]) -> None:
    """Each method's `registry merge` alternated with the I/O floor (separate processes, after one untimed
    floor run); prints wall times, peak RSS and the ratio to the floor measured next to it."""
    shape = Shape(layers=args.layers)
    print(f"synthesizing {shape} under {args.work}/models", flush=True)
    models = synthesize(args.work / "models", shape)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = args.work / "out"
    floor_cmd = [sys.executable, "-c", IO_FLOOR, *(str(models[m]) for m in ("base", "ft1", "ft2")), str(out)]
    shutil.rmtree(out, ignore_errors=True)
    run_child(floor_cmd, env, args.work / "warmup.log")
    rows = []
    for method in methods:
        path = args.work / f"{method}.yml"
        path.write_text(json.dumps(method_config(method, models, args.density), indent=2))
        cmd = [str(BIN / "registry"), "--quiet", "merge", str(path), "--out", str(out), "--device", "cpu"]
        walls: dict[str, list[float]] = {"floor": [], "merge": []}
        cpus: dict[str, list[float]] = {"floor": [], "merge": []}
        rss = 0.0
        for _ in range(args.runs):
            for what, command in (("floor", floor_cmd), ("merge", cmd)):
                shutil.rmtree(out, ignore_errors=True)
                wall, peak = run_child(command, env, args.work / f"{method}-{what}.log")
                walls[what].append(wall)
                cpus[what].append(LAST_CPU[0])
                rss = max(rss, peak) if what == "merge" else rss
        floor, merge = statistics.median(walls["floor"]), statistics.median(walls["merge"])
        cpu_floor, cpu_merge = statistics.median(cpus["floor"]), statistics.median(cpus["merge"])
        load = os.getloadavg()[0]
        rows.append((method, merge, floor, cpu_merge, cpu_floor, rss, load))
        print(
            f"{method:16s} merge {merge:6.1f} s  floor {floor:6.1f} s  {merge / floor:5.2f}x  "
            f"CPU {cpu_merge:6.1f} s / {cpu_floor:5.1f} s  peak RSS {rss:.2f} GiB  (load {load:.1f})",
            flush=True,
        )
    shutil.rmtree(out, ignore_errors=True)
    print(
        "\n| method | merge s | floor s | merge / floor | CPU s merge / floor | peak RSS GiB | load |"
        "\n|---|---|---|---|---|---|---|"
    )
    for method, merge, floor, cpu_merge, cpu_floor, rss, load in rows:
        print(
            f"| `{method}` | {merge:.1f} | {floor:.1f} | {merge / floor:.2f}x | {cpu_merge:.1f} / {cpu_floor:.1f} "
            f"| {rss:.2f} | {load:.1f} |"
        )


if __name__ == "__main__":
    main()
