"""Benchmark: the embedded hub (this tree) against the old hand-written HTTP server (`main`), same load.

Each server runs as its own process over its own fresh data dir, one after the other (the machine
has 2 cores; both at once would measure contention). The old implementation is the `registry`
package of git ref `--old` (default: the last commit with the hand-written server) extracted to
a temp dir with `git archive`. Load:
`--clients` concurrent keep-alive clients (threads spread over `--procs` processes) for
`--seconds` on each of

- `GET /api/models/{repo}` (repo info with a card), and
- `GET /{repo}/resolve/main/big.bin` (a 10 MB file),

recording requests/s, p50/p99 latency, errors and the server's peak RSS. Then optionally a
seeded fuzz pass (`--fuzz N`, shared with tests/integration/test_localhub_fuzz.py) against our
server: 5xx (other than the Xet 501s), dropped connections, files written outside the data dir.

    .venv/bin/python bench/bench_hub.py                            # 16 clients x 20 s, both servers
    .venv/bin/python bench/bench_hub.py --seconds 5 --fuzz 2000    # quicker, plus the fuzz pass
    .venv/bin/python bench/bench_hub.py --history 5000             # resolve/tree cost at 1 vs N commits

Nothing here is imported by the product.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
BIG = 10 * 1024 * 1024 - 1  # just under the LFS threshold: inline files that big are refused (413 LfsRequired)

SERVER = """
import sys
from pathlib import Path
from registry.localhub import EmbeddedHub
hub = EmbeddedHub.create(Path(sys.argv[1]), port=0)
print(hub.url, flush=True)
import registry.localhub as _impl
print(_impl.__file__, flush=True)
try:
    hub.server.serve_forever()
finally:
    hub.stop()
"""
TOKEN = """
import sys
from pathlib import Path
from registry.localhub.auth import Accounts
print(Accounts(Path(sys.argv[1])).create_token("alice", write=True))
"""


class Server:
    """A hub process from `pythonpath` over `data`."""

    def __init__(self, pythonpath: Path, data: Path) -> None:
        # cwd = pythonpath too: `python -c` puts the working directory first on sys.path.
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        self.token = subprocess.run(
            [sys.executable, "-c", TOKEN, str(data)],
            env=env,
            cwd=pythonpath,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(data)],
            env=env,
            cwd=pythonpath,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"hub from {pythonpath} did not start")
        self.origin = self.proc.stdout.readline().strip()  # which registry package it imported

    def rss(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _request(url: str, method: str, path: str, *, token: str, body: bytes = b"", ctype: str = "") -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"}
    if ctype:
        headers["Content-Type"] = ctype
    conn.request(method, path, body=body or None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def seed_repo(server: Server, repo: str = "alice/bench") -> None:
    """A repo with a card and a 10 MB file, created over HTTP (works for both implementations)."""
    status, _ = _request(
        server.url,
        "POST",
        "/api/repos/create",
        token=server.token,
        body=json.dumps({"name": repo.split("/")[1]}).encode(),
    )
    assert status == 200, status
    card = b"---\nlicense: mit\ntags: [bench]\nlanguage: [bn]\n---\n# bench\n"
    big = os.urandom(BIG)
    lines = [{"key": "header", "value": {"summary": "seed"}}]
    for path, data in (("README.md", card), ("big.bin", big), ("config.json", b'{"a": 1}')):
        lines.append({"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode()}})
    body = "\n".join(json.dumps(line) for line in lines).encode()
    status, text = _request(
        server.url,
        "POST",
        f"/api/models/{repo}/commit/main",
        token=server.token,
        body=body,
        ctype="application/x-ndjson",
    )
    assert status == 200, text[:200]


def _client_proc(url: str, path: str, threads: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    parts = urlsplit(url)
    stop_at = time.monotonic() + seconds
    lat: list[float] = []
    errors = [0]
    nbytes = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        mine: list[float] = []
        err = got = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                got += len(resp.read())
                if resp.status != 200:
                    err += 1
                mine.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException):
                err += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        conn.close()
        with lock:
            lat.extend(mine)
            errors[0] += err
            nbytes[0] += got

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, errors[0], nbytes[0]))


def load(server: Server, path: str, *, clients: int, procs: int, seconds: float) -> dict[str, float]:
    """`clients` keep-alive clients GETting `path` for `seconds`; throughput, latency, errors, peak RSS."""
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [mp.Process(target=_client_proc, args=(server.url, path, n, seconds, out)) for n in per if n]
    rss_peak = [server.rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            rss_peak[0] = max(rss_peak[0], server.rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    done.set()
    sampler.join()
    lat = sorted(x for r in results for x in r[0])
    n = len(lat)
    return {
        "req_s": n / elapsed,
        "p50_ms": 1000 * lat[n // 2] if n else float("nan"),
        "p99_ms": 1000 * lat[min(n - 1, int(n * 0.99))] if n else float("nan"),
        "errors": float(sum(r[1] for r in results)),
        "MB_s": sum(r[2] for r in results) / elapsed / 1e6,
        "rss_MB": rss_peak[0] / 2**20,
    }


def old_tree(ref: str, dest: Path) -> Path:
    """The `registry` package of git `ref`, extracted under `dest`."""
    archive = subprocess.run(["git", "archive", ref, "registry"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def history_cost(pythonpath: Path, n: int, work: Path) -> dict[str, float]:
    """Median resolve (short commit id) and `tree?recursive&expand` times over the same 350 files,
    at 1 commit and after `n` commits (each changing one file), and the repo's size on disk."""
    server = Server(pythonpath, work / f"hist-{pythonpath.name}")
    try:
        status, _ = _request(server.url, "POST", "/api/repos/create", token=server.token, body=b'{"name": "hist"}')
        assert status == 200

        def commit(i: int, *, every_file: bool = False) -> str:
            paths = (
                [f"d{d}/f{f}.txt" for d in range(50) for f in range(7)] if every_file else [f"d{i % 50}/f{i % 7}.txt"]
            )
            lines = [{"key": "header", "value": {"summary": f"c{i}"}}]
            lines += [
                {"key": "file", "value": {"path": p, "content": base64.b64encode(b"%d" % i).decode()}} for p in paths
            ]
            body = "\n".join(json.dumps(x) for x in lines).encode()
            status, text = _request(
                server.url,
                "POST",
                "/api/models/alice/hist/commit/main",
                token=server.token,
                body=body,
                ctype="application/x-ndjson",
            )
            assert status == 200, text[:200]
            return str(json.loads(text)["commitOid"])

        def timed(path: str, reps: int = 15) -> float:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                status, _ = _request(server.url, "GET", path, token=server.token)
                times.append(time.perf_counter() - t0)
                assert status == 200, (path, status)
            return statistics.median(times)

        first = commit(0, every_file=True)  # the same 350 files at 1 commit and at n commits
        at1 = {
            "resolve_short": timed(f"/alice/hist/resolve/{first[:7]}/d0/f0.txt"),
            "tree_expand": timed("/api/models/alice/hist/tree/main?recursive=true&expand=true"),
        }
        for i in range(1, n):
            commit(i)
        atn = {
            "resolve_short": timed(f"/alice/hist/resolve/{first[:7]}/d0/f0.txt"),
            "tree_expand": timed("/api/models/alice/hist/tree/main?recursive=true&expand=true"),
        }
        du = sum(f.stat().st_size for f in (work / f"hist-{pythonpath.name}" / "repos").rglob("*") if f.is_file())
        return {**{f"{k}@1_ms": 1000 * v for k, v in at1.items()}, **{f"{k}@{n}_ms": 1000 * v for k, v in atn.items()},
                "ratio_resolve": atn["resolve_short"] / at1["resolve_short"],
                "ratio_tree": atn["tree_expand"] / at1["tree_expand"], "repo_MB": du / 1e6}  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--old",
        default="858ca50a1c5daf254a0b332594de6c2ac273d948",
        help="git ref of the old implementation (default: the last commit with the hand-written HTTP server; '' to skip)",
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--procs", type=int, default=4, help="client processes (threads spread over them)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server and route (medians)")
    parser.add_argument("--fuzz", type=int, default=0, help="also send N seeded fuzz requests to our server")
    parser.add_argument("--history", type=int, default=0, help="also measure resolve/tree at 1 vs N commits (ours)")
    parser.add_argument(
        "--history-old", type=int, default=None, help="N for the old server (default: --history; 0: skip)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    try:
        impls: dict[str, Path] = {}
        if args.old:
            (work / "old").mkdir()
            impls["old"] = old_tree(args.old, work / "old")
        impls["new"] = REPO
        # Both servers run side by side (an idle one costs nothing); the load alternates between
        # them, round after round, so drifting load on a shared machine hits both alike.
        servers = {name: Server(path, work / f"data-{name}") for name, path in impls.items()}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in servers}
        try:
            for name, server in servers.items():
                print(f"{name}: serving from {server.origin}", file=sys.stderr, flush=True)
                seed_repo(server)
            routes = (("info", "/api/models/alice/bench"), ("resolve10MB", "/alice/bench/resolve/main/big.bin"))
            for round_ in range(args.rounds):
                for label, url_path in routes:
                    for name, server in servers.items():
                        print(f"round {round_ + 1}: {name} {label} ...", file=sys.stderr, flush=True)
                        m = load(server, url_path, clients=args.clients, procs=args.procs, seconds=args.seconds)
                        runs[name].setdefault(label, []).append(m)
            if args.fuzz:
                sys.path.insert(0, str(REPO))
                from tests.integration.test_localhub_fuzz import run_fuzz

                server = servers["new"]
                before = {p.name for p in work.iterdir()}
                report = run_fuzz(server.url, seed=2026, n=args.fuzz, tokens=[None, server.token, "hf_bogus"],
                                  repos=["alice/bench", "alice/none", "bob/x"])  # fmt: skip
                outside = {p.name for p in work.iterdir()} - before
                alive = _request(server.url, "GET", "/api/models", token=server.token)[0] == 200
                print(f"fuzz: {report.sent} requests, statuses {dict(sorted(report.statuses.items()))}, "
                      f"5xx {len(report.server_errors)}, dropped {len(report.dropped)}, "
                      f"new entries outside the data dir {sorted(outside)}, server alive {alive}")  # fmt: skip
        finally:
            for server in servers.values():
                server.stop()
        rows = {
            name: {label: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for label, ms in per.items()}
            for name, per in runs.items()
        }
        cols = ["req_s", "p50_ms", "p99_ms", "errors", "MB_s", "rss_MB"]
        print(
            f"{args.clients} clients x {args.seconds:g} s each, medians of {args.rounds} alternating rounds, "
            f"cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}"
        )
        print(f"{'server':8}{'route':13}" + "".join(f"{c:>10}" for c in cols))
        for name, per_route in rows.items():
            for label, m in per_route.items():
                print(f"{name:8}{label:13}" + "".join(f"{m[c]:10.1f}" for c in cols))
        if "old" in rows:
            for label in rows["new"]:
                ratio = rows["new"][label]["req_s"] / rows["old"][label]["req_s"]
                print(f"ratio new/old req/s {label}: {ratio:.2f}")
        for name, path in impls.items():
            n = args.history if name == "new" or args.history_old is None else args.history_old
            if n:
                print(f"{name}: {n} commits ...", file=sys.stderr, flush=True)
                cost = history_cost(path, n, work)
                print(f"history {name}: {json.dumps({k: round(v, 2) for k, v in cost.items()})}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
