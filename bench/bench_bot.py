"""Benchmark: the merge bot's reliability figures and its push -> published time.

Everything runs against real servers on 127.0.0.1: an embedded hub (`registry hub serve`, a
subprocess) and the bot's receiver under uvicorn.

1. burst: N deliveries (default 1,000) with 30 % duplicates, shuffled, 32 at a time, to
   `POST /webhooks/hub` -> every answer 2xx, exactly one job per revision, answer-time p50/p99,
   next to `GET /healthz` (the peer: the same server answering without a queue write).
2. kill: `registry bot run-once` SIGKILLed mid-merge, mid-eval and mid-push (the
   MERGELING_BOT_STALL seam), then resumed -> published, one commit, no staging left.
3. restart: the hub stopped with a job queued, restarted on the same port -> retried, published.
4. time: lab-size models (`registry demo`'s, trained once into .mergeling/demo/lab) pushed as a CT
   -> published, with --eval-limit 20 on the language's suite; the merge / eval / push split.

    .venv/bin/python bench/bench_bot.py                      # all four (the time part trains once, ~2 min)
    .venv/bin/python bench/bench_bot.py --only burst --deliveries 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import BotConfig  # noqa: E402
from bot.queue import trigger_key  # noqa: E402
from bot.testing import ct_meta, eval_fixture, push_checkpoint, sft_meta, wait_for  # noqa: E402
from bot.worker import Worker  # noqa: E402


# -- a hub subprocess -------------------------------------------------------------------------------
class Hub:
    def __init__(self, data: Path, port: int = 0) -> None:
        from registry.localhub.auth import Accounts

        data.mkdir(parents=True, exist_ok=True)
        accounts = Accounts(data)
        self.alice = accounts.create_token("alice", write=True, name="bench")
        self.bot = accounts.create_token("mergebot", write=True, name="bench-bot")
        self.data, self.port = data, port
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-c", "from registry.cli import main; main()", "hub", "serve", "--data",
               str(self.data), "--port", str(self.port)]  # fmt: skip
        self.log = (self.data.parent / "hub.log").open("a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO)
        self.url = (self.proc.stdout.readline() if self.proc.stdout else "").strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"hub did not start; see {self.data.parent / 'hub.log'}")
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)

    def client(self, token: str, cache: Path) -> Any:
        from registry.hub import HubClient

        return HubClient(endpoint=self.url, token=token, cache_dir=cache)

    def env(self, token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=self.url, HF_TOKEN=token, HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO),
                   HF_HOME=str(self.data.parent / "hf-home"))  # fmt: skip
        return env


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- 1. burst ------------------------------------------------------------------------------------
def bench_burst(root: Path, deliveries: int, duplicates: float, concurrency: int) -> dict[str, Any]:
    """`registry bot serve --workers 0` as its own process (the receiver only), hit by `concurrency` clients."""
    import httpx

    from bot.queue import JobQueue

    env = {**os.environ, "MERGELING_WEBHOOK_SECRET": "bench-secret", "HF_ENDPOINT": "http://127.0.0.1:9",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "-q", "bot", "serve", "--registry",
           "mergebot/r", "--namespace", "mergebot", "--watch", "alice", "--data", str(root / "burst"), "--port", "0",
           "--no-register", "--workers", "0", "--no-eval"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    rng = random.Random(0)
    unique = int(round(deliveries * (1 - duplicates)))
    shas = [f"{i:040x}" for i in range(unique)]
    order = shas + [rng.choice(shas) for _ in range(deliveries - unique)]
    rng.shuffle(order)
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64))
    wait_for(lambda: _ok(client, url + "/healthz"), timeout=30)

    def body(sha: str) -> bytes:
        repo = f"alice/ct-{int(sha, 16) % 50}"
        return json.dumps({
            "event": {"action": "update", "scope": "repo.content"},
            "repo": {"type": "model", "name": repo, "id": "1", "private": False, "headSha": sha,
                     "url": {"web": "w", "api": "a"}, "owner": {"id": "alice"}},
            "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}],
            "webhook": {"id": "h", "version": 3},
        }).encode()  # fmt: skip

    def deliver(sha: str) -> tuple[int, float, str]:
        started = time.perf_counter()
        response = client.post(url + "/webhooks/hub", content=body(sha),
                               headers={"X-Webhook-Secret": "bench-secret", "Content-Type": "application/json"})  # fmt: skip
        return response.status_code, time.perf_counter() - started, response.json()["jobs"][0]

    def health(_: int) -> float:
        started = time.perf_counter()
        client.get(url + "/healthz")
        return time.perf_counter() - started

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(deliver, order))
            wall = time.perf_counter() - t0
            peer = list(pool.map(health, range(deliveries)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    jobs = JobQueue(root / "burst" / "bot.sqlite3").list()
    ids: dict[str, str] = {}
    consistent = all(ids.setdefault(sha, job) == job for sha, (_, _, job) in zip(order, answers, strict=True))
    latencies = [a[1] for a in answers]
    return {
        "deliveries": deliveries, "unique": unique, "jobs": len(jobs), "concurrency": concurrency,
        "all_2xx": all(200 <= a[0] < 300 for a in answers), "one_job_per_key": len(jobs) == unique and consistent,
        "wall_s": round(wall, 2), "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "healthz_p50_ms": round(1000 * statistics.median(peer), 1),
        "healthz_p99_ms": round(1000 * _percentile(peer, 0.99), 1),
    }  # fmt: skip


def _ok(client: Any, url: str) -> bool:
    try:
        return bool(client.get(url).status_code == 200)
    except Exception:  # noqa: BLE001 (not up yet)
        return False


# -- 2 and 3. crashes ------------------------------------------------------------------------------
def _family(root: Path) -> Any:
    from registry.lab.tiny import build_demo_family

    return build_demo_family(root / "family", seed=0)


def _prepared(hub: Hub, family: Any, root: Path, tag: str) -> tuple[BotConfig, Any]:
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_sft_entry

    alice, bot = hub.client(hub.alice, root / f"c-{tag}-a"), hub.client(hub.bot, root / f"c-{tag}-b")
    push_checkpoint(alice, family.base, f"alice/{tag}-base", {"license": "mit"})
    push_checkpoint(alice, family.sft, f"alice/{tag}-sft", sft_meta(f"alice/{tag}-base"))
    CatalogStore(hub=bot, repo_id=f"mergebot/{tag}-reg").add(
        build_sft_entry(bot, repo=f"alice/{tag}-sft", revision=None, base=f"alice/{tag}-base")
    )
    suites, data = eval_fixture(root / f"eval-{tag}")
    config = BotConfig(data=root / f"bot-{tag}", registry=f"mergebot/{tag}-reg", namespace="mergebot",
                       endpoint=hub.url, token=hub.bot, suites_dir=suites, data_dir=data, eval_limit=2, lease_s=2,
                       backoff_s=0.2)  # fmt: skip
    sha = push_checkpoint(alice, family.ct, f"alice/{tag}-ct", ct_meta("bn", f"alice/{tag}-base"))
    config.open_queue().enqueue(
        key=trigger_key(f"alice/{tag}-ct", sha), kind="pair", ct_repo=f"alice/{tag}-ct", ct_sha=sha
    )
    return config, bot


def _outcome(config: BotConfig, bot: Any) -> dict[str, Any]:
    from huggingface_hub import HfApi

    (job,) = config.open_queue().list()
    commits = (
        HfApi(endpoint=bot.endpoint, token=config.token).list_repo_commits(job.output_repo) if job.output_repo else []
    )
    return {
        "state": job.state, "bot_commits": len([c for c in commits if c.title != "initial commit"]),
        "staging_left": len(list((config.data / "staging").iterdir())) if (config.data / "staging").exists() else 0,
        "attempts": job.attempts,
    }  # fmt: skip


def bench_kill(root: Path) -> dict[str, Any]:
    hub = Hub(root / "hub-kill")
    family = _family(root)
    out = {}
    try:
        for point in ("merge", "eval", "push"):
            config, bot = _prepared(hub, family, root, f"kill-{point}")
            cmd = [sys.executable, "-c", "from registry.cli import main; main()", "bot", "run-once", "--data",
                   str(config.data), "--registry", config.registry, "--namespace", config.namespace, "--eval-suites",
                   str(config.suites_dir), "--eval-data-dir", str(config.data_dir), "--eval-limit", "2",
                   "--lease-seconds", "2"]  # fmt: skip
            env = {**hub.env(hub.bot), "MERGELING_BOT_STALL": point}
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda c=config, p=point: (c.data / f"stalled-{p}").is_file(), timeout=180)  # type: ignore[misc]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(config.lease_s + 0.5)
            started = time.perf_counter()
            Worker(config, hub=bot).run_until_idle()
            out[point] = {**_outcome(config, bot), "resume_s": round(time.perf_counter() - started, 1)}
    finally:
        hub.stop()
    return out


def bench_restart(root: Path) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = Hub(root / "hub-restart", port=port)
    config, bot = _prepared(hub, _family(root), root, "restart")
    hub.stop()
    worker = Worker(config, hub=bot)
    worker.run_until_idle(max_jobs=1)
    hub.start()
    try:
        wait_for(lambda: worker.run_until_idle() or config.open_queue().list()[0].state in ("published", "failed"),
                 timeout=120, interval=0.3)  # fmt: skip
        return _outcome(config, bot)
    finally:
        hub.stop()


# -- 4. time ------------------------------------------------------------------------------------
def bench_time(root: Path, lab_dir: Path, eval_limit: int) -> dict[str, Any]:
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_sft_entry
    from registry.cli.demo import LAB_SIZE, _shared_data

    data = _shared_data()
    if not (lab_dir / "lab.json").is_file():
        from registry.lab.build import LabConfig, build_lab

        t0 = time.perf_counter()
        build_lab(lab_dir, config=LabConfig(**LAB_SIZE), data_dir=data, resume=True, progress=False)
        print(f"trained the lab-size models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    manifest = json.loads((lab_dir / "lab.json").read_text())["checkpoints"]
    names = {entry["role"]: (name, entry["repo_id"]) for name, entry in manifest.items()}
    hub = Hub(root / "hub-time")
    try:
        alice, bot = hub.client(hub.alice, root / "c-time-a"), hub.client(hub.bot, root / "c-time-b")
        for role in ("base", "sft"):
            alice.create_repo(names[role][1], exist_ok=True)
            alice.upload_folder(lab_dir / names[role][0], names[role][1])
        CatalogStore(hub=bot, repo_id="mergebot/time-reg").add(
            build_sft_entry(bot, repo=names["sft"][1], revision=None, base=names["base"][1])
        )
        config = BotConfig(data=root / "bot-time", registry="mergebot/time-reg", namespace="mergebot",
                           endpoint=hub.url, token=hub.bot, data_dir=data, eval_limit=eval_limit)  # fmt: skip
        if data is None:
            config.suites_dir, config.data_dir = eval_fixture(root / "eval-time")
        pushed = time.perf_counter()
        sha = (
            alice.upload_folder(lab_dir / names["ct"][0], names["ct"][1])
            if alice.create_repo(names["ct"][1], exist_ok=True)
            else ""
        )
        config.open_queue().enqueue(
            key=trigger_key(names["ct"][1], sha), kind="pair", ct_repo=names["ct"][1], ct_sha=sha
        )
        (job,) = Worker(config, hub=bot).run_until_idle()
        total = time.perf_counter() - pushed
    finally:
        hub.stop()
    return {
        "state": job.state, "error": job.error, "push_to_published_s": round(total, 1),
        "suite": str(config.suites_dir / "ben_Beng.yaml"), "eval_limit": eval_limit,
        **{f"{k}_s": v for k, v in job.public()["seconds"].items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["burst", "kill", "restart", "time"], action="append")
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--duplicates", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--lab", type=Path, default=REPO / ".mergeling" / "demo" / "lab")
    parser.add_argument("--eval-limit", type=int, default=20)
    args = parser.parse_args()
    parts = args.only or ["burst", "kill", "restart", "time"]
    root = Path(
        tempfile.mkdtemp(prefix="bench-bot-", dir=REPO / "bench" / "_work" if (REPO / "bench").is_dir() else None)
    )
    try:
        results: dict[str, Any] = {}
        if "burst" in parts:
            results["burst"] = bench_burst(root, args.deliveries, args.duplicates, args.concurrency)
            b = results["burst"]
            print(f"burst: {b['deliveries']} deliveries ({b['unique']} unique, {b['concurrency']} at a time) -> {b['jobs']} jobs, all 2xx: "
                  f"{b['all_2xx']}, one job per key: {b['one_job_per_key']}; webhook p50 {b['p50_ms']} ms, p99 "
                  f"{b['p99_ms']} ms (healthz p99 {b['healthz_p99_ms']} ms, ratio "
                  f"{b['p99_ms'] / max(b['healthz_p99_ms'], 0.001):.1f}x); {b['wall_s']} s")  # fmt: skip
        if "kill" in parts:
            results["kill"] = bench_kill(root)
            for point, k in results["kill"].items():
                print(f"SIGKILL mid-{point}: {k['state']}, {k['bot_commits']} commit, {k['staging_left']} staging dirs "
                      f"left, resumed in {k['resume_s']} s")  # fmt: skip
        if "restart" in parts:
            results["restart"] = r = bench_restart(root)
            print(f"hub restart: {r['state']} after {r['attempts']} failed attempt(s), {r['bot_commits']} commit")
        if "time" in parts:
            results["time"] = t = bench_time(root, args.lab, args.eval_limit)
            print(f"push -> published: {t['push_to_published_s']} s ({t['state']}); merge {t['merge_s']} s, eval "
                  f"{t['eval_s']} s, push {t['publish_s']} s; suite {t['suite']}, --eval-limit {t['eval_limit']}")  # fmt: skip
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
