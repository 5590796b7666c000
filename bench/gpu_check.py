"""GPU check: the CUDA merge path on a Llama-2-7B shape, against an I/O floor and `mergekit-yaml --cuda`.

Steps (each prints its result at once and adds it to `--json`; a failing step does not stop the next):

1. identity: fp32 inputs (Llama-2-7B width, `--check-layers` layers), merged on CPU and on CUDA by
   the engine (`ties`, `ties_sv`, `dare_ties`): entries that differ, bit for bit (want 0).
2. oom: the same merge in a child process capped at `--oom-gib` of GPU memory: it must fail with
   one clear line (`out of GPU memory ... --device cpu`) and leave nothing at --out or beside it.
3. timing: bf16 inputs, `--layers` layers (16: 3.5 B parameters per model), TIES density 0.2,
   bf16 out, each as a separate process, `--runs` times, alternating: the engine on CUDA,
   `mergekit-yaml --cuda` (default settings; its `dtype: bfloat16` compute), and the I/O floor
   (read the three inputs, write one output, CPU). Ratios: ours / floor, mergekit / ours.
   Then the same two inside one warm process (`--inproc-runs` each, alternating floor/merge,
   median): Python, torch and the CUDA context are started and a tiny merge and floor done
   first, so both timers see only the work; the engine's per-stage times come with each merge.
4. startup (measured before timing): a bare Python, `import torch`, the CUDA context (first
   allocation, synchronised) and `import registry.merge.engine`, in a fresh process.

Inputs and outputs go to `--work` (default /dev/shm/mergeling-gpu, a RAM disk, when it has room).

    python bench/gpu_check.py --json results.json                          # on the GPU machine
    python bench/gpu_check.py --small --device cpu --skip-mergekit         # the script itself, on CPU
    python bench/gpu_check.py --skip identity,oom --skip-mergekit --json r.json   # timing only

`--device cpu` replaces CUDA by CPU everywhere (to test this script without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_merge import IO_FLOOR, Shape, run_child, synthesize  # noqa: E402

LLAMA2_7B = {"hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32, "vocab": 32000}
SMALL = {"hidden": 256, "intermediate": 688, "heads": 8, "kv_heads": 8, "vocab": 1024}

MERGE = r"""
import sys, time
from pathlib import Path
import yaml
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe
config, out, device = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if len(sys.argv) > 4:  # a GPU memory cap in GiB (the OOM check)
    import torch
    torch.cuda.set_per_process_memory_fraction(float(sys.argv[4]) * 2**30 / torch.cuda.get_device_properties(0).total_memory)
run_merge(plan_merge(parse_recipe(yaml.safe_load(Path(config).read_text()))), out=out, device=device, progress=False)
"""
STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
if sys.argv[1] != "cpu":
    torch.zeros(1, device=sys.argv[1]).add_(1)
    torch.cuda.synchronize()
t2 = time.perf_counter()
import registry.merge.engine, registry.merge.methods  # noqa: E401
t3 = time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "cuda_context_s": t2 - t1, "import_engine_s": t3 - t2}))
"""
INPROC = r"""
import json, shutil, statistics, sys, time
from pathlib import Path
import torch
import yaml
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe
args = json.loads(sys.argv[1])
device, out = args["device"], Path(args["out"])
if device != "cpu":
    torch.zeros(1, device=device).add_(1)
    torch.cuda.synchronize()

def plan(config):
    return plan_merge(parse_recipe(yaml.safe_load(Path(config).read_text())))

def floor(inputs):
    shutil.rmtree(out, ignore_errors=True)
    sys.argv = ["floor", *inputs, str(out)]
    start = time.perf_counter()
    exec(args["floor_code"], {"__name__": "io_floor"})
    return time.perf_counter() - start

def merge(config):
    shutil.rmtree(out, ignore_errors=True)
    p = plan(config)  # planning reads headers only; kept out of the timer like the floor's argv
    start = time.perf_counter()
    result = run_merge(p, out=out, device=device, progress=False)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.stages

floor(args["warm_inputs"]); merge(args["warm_config"])  # warm-up: kernels, allocator, imports
runs = {"floor": [], "merge": [], "stages": []}
for r in range(args["runs"]):
    for what in (("floor", "merge") if r % 2 == 0 else ("merge", "floor")):
        if what == "floor":
            runs["floor"].append(round(floor(args["inputs"]), 3))
        else:
            wall, stages = merge(args["config"])
            runs["merge"].append(round(wall, 3))
            runs["stages"].append(stages)
        print(f"  in-process run {r + 1}: {what:6s} {runs[what][-1]:7.2f} s", file=sys.stderr, flush=True)
shutil.rmtree(out, ignore_errors=True)
print(json.dumps(runs))
"""
MERGEKIT = "import sys; from mergekit.scripts.run_yaml import main; sys.argv[0] = 'mergekit-yaml'; main()"


def _config(models: dict[str, Path], method: str, *, dtype: str, out_dtype: str) -> dict[str, object]:
    config: dict[str, object] = {
        "merge_method": method,
        "base_model": str(models["base"]),
        "dtype": dtype,
        "out_dtype": out_dtype,
        "models": [
            {"model": str(models["ft1"]), "role": "ct", "parameters": {"weight": 1.0, "density": 0.2}},
            {"model": str(models["ft2"]), "role": "sft", "parameters": {"weight": 1.0, "density": 0.2}},
        ],
        "parameters": {"normalize": True},
    }
    if method == "ties_sv":
        config["parameters"] = {"normalize": True, "slack": 0.1}
    if method == "dare_ties":
        config["parameters"] = {"normalize": True, "random_seed": 1}
    return config


def _merge(config: dict[str, object], out: Path, device: str, work: Path, cap: float | None = None) -> float:
    import yaml

    path = work / f"config-{time.monotonic_ns()}.yml"
    path.write_text(yaml.safe_dump(config))
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cmd = [sys.executable, "-c", MERGE, str(path), str(out), device, *([str(cap)] if cap else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return time.perf_counter() - start


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join(sys.path))


def _differ(a: Path, b: Path) -> tuple[int, int]:
    import torch
    from safetensors.torch import load_file

    def load(path: Path) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for file in sorted(path.glob("*.safetensors")):
            out.update(load_file(file))
        return out

    ta, tb = load(a), load(b)
    if ta.keys() != tb.keys():
        raise RuntimeError(f"tensor names differ between {a} and {b}")
    differ = total = 0
    for name, x in ta.items():
        bits = torch.int32 if x.element_size() == 4 else torch.int16
        differ += int((x.view(bits) != tb[name].view(bits)).sum())
        total += x.numel()
    return differ, total


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--check-layers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="whole-process runs of each (0: none)")
    parser.add_argument("--inproc-runs", type=int, default=2, help="in-process runs of each (0: none)")
    parser.add_argument("--identity-methods", default="ties,ties_sv,dare_ties", help="comma-separated")
    parser.add_argument("--oom-gib", type=float, default=1.0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a tiny shape (to test the script)")
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: identity,oom,startup,timing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dev = args.device
    results: dict[str, object] = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}
    shape_kw = SMALL if args.small else LLAMA2_7B
    work = args.work or _pick_work(args)
    work.mkdir(parents=True, exist_ok=True)
    results["work"] = str(work)
    results["torch"] = torch.__version__
    print(json.dumps(results), flush=True)
    skip = set(filter(None, args.skip.split(",")))

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    def step(name: str, fn: object) -> None:
        if name in skip:
            return
        start = time.perf_counter()
        try:
            results[name] = fn()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - report and go on to the next step
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(f"[{time.perf_counter() - start:6.1f} s] {name}: {json.dumps(results[name])[:1500]}", flush=True)
        save()

    gen_device = "cuda" if dev == "cuda" else "cpu"
    fp32: dict[str, Path] = {}

    def identity() -> dict[str, object]:
        fp32.update(
            synthesize(work / "fp32", Shape(layers=args.check_layers, **shape_kw), dtype="float32", device=gen_device)
        )
        out: dict[str, object] = {}
        for method in args.identity_methods.split(","):
            config = _config(fp32, method, dtype="float32", out_dtype="float32")
            cpu_s = _merge(config, work / "id-cpu", "cpu", work)
            dev_s = _merge(config, work / "id-dev", dev, work)
            differ, total = _differ(work / "id-cpu", work / "id-dev")
            out[method] = {"differ": differ, "entries": total, "cpu_s": round(cpu_s, 1), f"{dev}_s": round(dev_s, 1)}
            print(f"  identity {method}: {differ} of {total} differ", flush=True)
        shutil.rmtree(work / "id-cpu", ignore_errors=True)
        shutil.rmtree(work / "id-dev", ignore_errors=True)
        return out

    def oom() -> dict[str, object]:
        if not fp32:
            fp32.update(synthesize(work / "fp32", Shape(layers=args.check_layers, **shape_kw), dtype="float32"))
        out_dir = work / "oom-out"
        try:
            _merge(_config(fp32, "ties", dtype="float32", out_dtype="float32"), out_dir, dev, work, cap=args.oom_gib)
        except RuntimeError as exc:
            left = [p.name for p in work.iterdir() if p.name.startswith(("oom-out", ".oom-out"))]
            return {"message": str(exc), "left_behind": left, "pass": "out of GPU memory" in str(exc) and not left}
        return {"message": "no error (the cap did not bite)", "pass": False}

    def timing() -> dict[str, object]:
        shutil.rmtree(work / "fp32", ignore_errors=True)
        models = synthesize(work / "bf16", Shape(layers=args.layers, **shape_kw), dtype="bfloat16", device=gen_device)
        config_path = work / "ties-bf16.yml"
        config_path.write_text(json.dumps(_config(models, "ties", dtype="bfloat16", out_dtype="bfloat16")))
        out = work / "timing-out"
        commands = {
            f"registry ({dev})": [sys.executable, "-c", MERGE, str(config_path), str(out), dev],
            "I/O floor": [sys.executable, "-c", IO_FLOOR, *(str(models[m]) for m in ("base", "ft1", "ft2")), str(out)],
        }
        if not args.skip_mergekit:
            cuda = ["--cuda"] if dev == "cuda" else []
            commands["mergekit-yaml --cuda"] = [sys.executable, "-c", MERGEKIT, str(config_path), str(out), *cuda]
        summary: dict[str, object] = {}
        if args.inproc_runs > 0:  # first, so a short lease gets it even when the whole-process runs do not fit
            summary["in_process"] = in_process(models, config_path, out)
        if args.runs == 0:
            return summary
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in commands}
        for run in range(args.runs):
            for name, cmd in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                log = work / f"log-{''.join(c for c in name if c.isalnum())}-{run}.txt"
                wall, rss = run_child(cmd, _env(), log)
                runs[name].append((round(wall, 2), round(rss, 2)))
                print(f"  run {run + 1}: {name:24s} {wall:7.1f} s  peak RSS {rss:5.2f} GiB", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        med = {n: statistics.median(w for w, _ in r) for n, r in runs.items()}
        ours = med[f"registry ({dev})"]
        summary.update(runs=runs, ours_over_io_floor=round(ours / med["I/O floor"], 3))
        if "mergekit-yaml --cuda" in med:
            summary["mergekit_over_ours"] = round(med["mergekit-yaml --cuda"] / ours, 2)
        return summary

    def in_process(models: dict[str, Path], config_path: Path, out: Path) -> dict[str, object]:
        warm = synthesize(work / "warm", Shape(layers=1, **SMALL), dtype="bfloat16", device="cpu")
        warm_config = work / "warm.yml"
        warm_config.write_text(json.dumps(_config(warm, "ties", dtype="bfloat16", out_dtype="bfloat16")))
        spec = {
            "device": dev,
            "out": str(out),
            "runs": args.inproc_runs,
            "floor_code": IO_FLOOR,
            "inputs": [str(models[m]) for m in ("base", "ft1", "ft2")],
            "warm_inputs": [str(warm[m]) for m in ("base", "ft1", "ft2")],
            "config": str(config_path),
            "warm_config": str(warm_config),
        }
        done = subprocess.run(
            [sys.executable, "-c", INPROC, json.dumps(spec)], stdout=subprocess.PIPE, env=_env(), text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"in-process timing failed (exit {done.returncode}); its stderr is above")
        runs = json.loads(done.stdout.strip().splitlines()[-1])
        floor, merge = statistics.median(runs["floor"]), statistics.median(runs["merge"])
        return {**runs, "floor_median_s": floor, "merge_median_s": merge, "ours_over_io_floor": round(merge / floor, 3)}

    def startup() -> dict[str, object]:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=_env(), check=True)
        bare = time.perf_counter() - start
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", STARTUP, dev], env=_env(), capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - start
        parts = json.loads(done.stdout.strip().splitlines()[-1])
        return {
            "python_bare_s": round(bare, 3),
            "whole_s": round(wall, 3),
            **{k: round(v, 3) for k, v in parts.items()},
        }

    step("identity", identity)
    step("oom", oom)
    step("startup", startup)
    step("timing", timing)
    print(json.dumps({k: v for k, v in results.items() if k != "trace"}, indent=1)[:6000], flush=True)


def _pick_work(args: argparse.Namespace) -> Path:
    shm = Path("/dev/shm")
    need = 3 * 7.2e9 * args.layers / 16 + 3 * 2.0e9 * args.check_layers + 2 * 7.2e9 * args.layers / 16
    if shm.is_dir() and shutil.disk_usage(shm).free > need * 1.1:
        return shm / "mergeling-gpu"
    print(f"/dev/shm has under {need / 1e9:.0f} GB free: using /tmp (not a RAM disk)", flush=True)
    return Path("/tmp/mergeling-gpu")


if __name__ == "__main__":
    main()
