"""The first `make demo` on a fresh machine: today's install recipe against another, alternated.

Each run is a fresh clone (at `--old-ref` for the old recipe, HEAD for the new), a fresh `HOME`
(so pip's and uv's caches start empty) and nothing installed: `make setup` is timed, then
`make demo` (the setup is then done, so this is the demo itself); their sum is what a newcomer's
first `make demo` costs. The two recipes alternate (old, new, new, old, ...) so a load change on
the machine hits both. Writes one JSON line per run and a summary table.

    python bench/bench_install.py --rounds 1          # about 15 minutes on 2 cores
    python bench/bench_install.py --setup-only        # the installs alone

The machine's pip configuration (`PIP_FIND_LINKS`, the folder holding the CPU torch wheel) is kept:
it is the machine's, not a cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The last commit before the lock (pip: torch first, then `-e .[test]` resolved from the ranges).
OLD_REF = "579f36e"


def _machine_pip_env() -> dict[str, str]:
    """pip's find-links of this machine (the CPU torch wheel), read before HOME changes."""
    env: dict[str, str] = {}
    links = (
        os.environ.get("PIP_FIND_LINKS")
        or subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True
        ).stdout.strip()
    )
    if links:
        env["PIP_FIND_LINKS"] = links
    return env


def run_once(variant: str, ref: str, root: Path, *, shared: Path | None, setup_only: bool) -> dict[str, object]:
    work = root / f"{variant}-{time.monotonic_ns()}"
    home = work / "home"
    home.mkdir(parents=True)
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", ref], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "XDG_", "PIP_", "HF_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), **_machine_pip_env())
    if shared is not None:
        env["MERGELING_SHARED_DATA"] = str(shared)
    out: dict[str, object] = {"variant": variant, "ref": ref}
    try:
        for target in ("setup",) if setup_only else ("setup", "demo"):
            started = time.perf_counter()
            done = subprocess.run(["make", target], cwd=repo, env=env, capture_output=True, text=True)
            out[f"{target}_s"] = round(time.perf_counter() - started, 1)
            if done.returncode != 0:
                out["error"] = f"make {target} failed: {done.stderr.strip().splitlines()[-1:]}"
                break
        out["first_make_demo_s"] = round(sum(float(out.get(k, 0)) for k in ("setup_s", "demo_s")), 1)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="Runs of each recipe (alternated).")
    parser.add_argument("--old-ref", default=OLD_REF, help="The commit whose Makefile is today's recipe.")
    parser.add_argument("--new-ref", default="HEAD", help="The commit whose Makefile is the new recipe.")
    parser.add_argument("--setup-only", action="store_true", help="Time `make setup` only (no demo).")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temp dir).")
    args = parser.parse_args()
    shared = Path(os.environ.get("MERGELING_SHARED_DATA", REPO.parent / "shared" / "data"))
    root = args.work or Path(tempfile.mkdtemp(prefix="bench-install-"))
    results: list[dict[str, object]] = []
    for round_ in range(args.rounds):
        order = [("old", args.old_ref), ("new", args.new_ref)]
        for variant, ref in order if round_ % 2 == 0 else order[::-1]:
            result = run_once(
                variant, ref, root, shared=shared if shared.is_dir() else None, setup_only=args.setup_only
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    print("\n| recipe | make setup (s) | make demo after it (s) | first make demo (s) |")
    print("|---|---|---|---|")
    for variant in ("old", "new"):
        rows = [r for r in results if r["variant"] == variant and "error" not in r]
        if rows:
            med = {
                k: statistics.median(float(r.get(k, 0)) for r in rows)
                for k in ("setup_s", "demo_s", "first_make_demo_s")
            }  # type: ignore[arg-type]
            print(f"| {variant} | {med['setup_s']:.0f} | {med['demo_s']:.0f} | {med['first_make_demo_s']:.0f} |")


if __name__ == "__main__":
    main()
