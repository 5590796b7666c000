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
    .venv/bin/python bench/bench_hub.py --upstream-tests ~/huggingface_hub/tests   # huggingface_hub's own tests

`--large-file GB` pushes one file of that size with the stock client (`HfApi.upload_file`, LFS:
`HF_HUB_DISABLE_XET=1`, as the hub tells users) to our server and fetches it back with
`hf_hub_download`, in a client process of its own; psutil samples the peak RSS of client and
server every 50 ms. It also records what a stock client with Xet on gets for a large file.

`--upstream-tests DIR` runs huggingface_hub's own server-facing tests (`test_hf_api.py`,
`test_file_download.py`, `test_snapshot_download.py`, `test_repocard.py`; not those marked
`production`, which need huggingface.co) against the old and the new server: a copy of DIR with
`testing_constants.py` pointed at the server (its users and tokens created there), with
`HF_HUB_DISABLE_XET=1` (Xet is not served). Needs pytest-mock and pytest-env.

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


UPSTREAM_FILES = ("test_hf_api.py", "test_file_download.py", "test_snapshot_download.py", "test_repocard.py")
UPSTREAM_USERS = {  # testing_constants name -> (user, org) on our server; names must be valid here
    "USER": ("dummy-hub-user", None),
    "OTHER_USER": ("DVUser", None),
    "ENTERPRISE_USER": ("EnterpriseAdmin", "EnterpriseOrgPrivate"),
}
USERS_AND_TOKENS = """
import json, sys
from pathlib import Path
from registry.localhub.auth import Accounts
accounts = Accounts(Path(sys.argv[1]))
users = json.loads(sys.argv[2])
print(json.dumps({k: accounts.create_token(u, org=o, write=True) for k, (u, o) in users.items()}))
"""


def upstream_tests(pythonpath: Path, tests: Path, work: Path, *, name: str, select: str) -> dict[str, object]:
    """huggingface_hub's own tests against a fresh server from `pythonpath`: outcome counts and failures."""
    import re
    import xml.etree.ElementTree as ET

    data = work / f"upstream-data-{name}"
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    tokens = json.loads(subprocess.run(
        [sys.executable, "-c", USERS_AND_TOKENS, str(data), json.dumps(UPSTREAM_USERS)],
        env=env, cwd=pythonpath, capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    server = Server(pythonpath, data)
    try:
        copy = work / f"upstream-{name}" / "tests"
        shutil.copytree(tests, copy)
        # Staging mode would pin the endpoint to hub-ci.huggingface.co: off, so HF_ENDPOINT is our server.
        pyproject = (
            (tests.parent / "pyproject.toml")
            .read_text()
            .replace("HUGGINGFACE_CO_STAGING=1", "HUGGINGFACE_CO_STAGING=0")
        )
        (copy.parent / "pyproject.toml").write_text(pyproject)
        constants = (copy / "testing_constants.py").read_text()
        replace = {"ENDPOINT_STAGING": server.url, "TOKEN": tokens["USER"], "OTHER_TOKEN": tokens["OTHER_USER"],
                   "ENTERPRISE_TOKEN": tokens["ENTERPRISE_USER"], "USER": UPSTREAM_USERS["USER"][0],
                   "OTHER_USER": UPSTREAM_USERS["OTHER_USER"][0], "ENTERPRISE_ORG": "EnterpriseOrgPrivate",
                   "ENTERPRISE_USER": "EnterpriseAdmin"}  # fmt: skip
        for key, value in replace.items():
            constants = re.sub(rf"^{key} = .*$", f"{key} = {value!r}", constants, flags=re.M)
        (copy / "testing_constants.py").write_text(constants)
        run_env_base = {k: v for k, v in os.environ.items() if k != "HUGGINGFACE_CO_STAGING"}
        stubbed = _stub_missing_imports(copy, run_env_base := {**run_env_base, "HF_HUB_DISABLE_XET": "1"})
        report = copy.parent / "report.xml"
        run_env = {**run_env_base, "HF_ENDPOINT": server.url}
        run_env.pop("PYTHONPATH", None)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not production",
             "-k", select, f"--junitxml={report}", "--timeout=120", *UPSTREAM_FILES],
            cwd=copy, env=run_env, capture_output=True, text=True,
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        server.stop()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures: list[str] = []
    for case in ET.parse(report).iter("testcase"):
        kinds = [child.tag for child in case]
        if "failure" in kinds or "error" in kinds:
            counts["failed"] += 1
            node = next(c for c in case if c.tag in ("failure", "error"))
            detail = (node.get("message") or "") + " " + (node.text or "")[-400:]
            failures.append(f"{case.get('classname')}::{case.get('name')}: {' '.join(detail.split())[:300]}")
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {
        "counts": counts,
        "seconds": round(took),
        "failures": failures,
        "stubbed": stubbed,
        "tail": proc.stdout[-600:],
    }


def _stub_missing_imports(tests: Path, env: dict[str, str]) -> list[str]:
    """Names the tests import that the installed huggingface_hub lacks (the snapshot's tests can be
    newer or older than the locked client): dropped from the import and bound to None, so the rest
    of the file runs; the tests that use them fail and are listed as version skew."""
    import re

    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    stubbed: list[str] = []
    for _ in range(30):
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                               "--collect-only", *UPSTREAM_FILES], cwd=tests, env=env, capture_output=True, text=True)  # fmt: skip
        found = re.search(r"(\w+\.py):\d+: in <module>.*?cannot import name '(\w+)' from '([\w.]+)'", proc.stdout, re.S)
        if found is None:
            return stubbed
        path, name = tests / found.group(1), found.group(2)
        text = path.read_text()
        text = re.sub(rf"^(\s+){name},\n", "", text, count=1, flags=re.M)
        text = re.sub(rf"(import [^\n]*?)\b{name}, ?|, {name}\b", r"\1", text, count=1)
        first_import = re.search(r"^(import|from) ", text, re.M)
        at = first_import.start() if first_import else 0
        text = text[:at] + f"{name} = None  # not in the installed huggingface_hub\n" + text[at:]
        path.write_text(text)
        stubbed.append(f"{found.group(1)}: {name}")
    return stubbed


LARGE_CLIENT = """
import os, sys, time
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download
url, token, path, cache, step = sys.argv[1:6]
api = HfApi(endpoint=url, token=token)
if step == "upload":
    api.create_repo("alice/large", exist_ok=True)
    t0 = time.monotonic()
    api.upload_file(path_or_fileobj=path, path_in_repo="model.safetensors", repo_id="alice/large")
else:
    t0 = time.monotonic()
    got = hf_hub_download("alice/large", "model.safetensors", cache_dir=cache, endpoint=url, token=token)
    assert os.path.getsize(got) == os.path.getsize(path)
print(f"{time.monotonic() - t0:.2f}", flush=True)
"""


def _peak_rss(pids: list[int], stop: threading.Event, peaks: dict[int, int]) -> None:
    import psutil

    procs = {pid: psutil.Process(pid) for pid in pids}
    while not stop.wait(0.05):
        for pid, proc in list(procs.items()):
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                continue
            peaks[pid] = max(peaks.get(pid, 0), rss)


def large_file(gb: float, work: Path) -> dict[str, object]:
    """Upload then download one `gb` GB file with the stock client over LFS: time and peak RSS of both sides."""
    server = Server(REPO, work / "data-large")
    src = work / "model.safetensors"
    block = os.urandom(1 << 20)
    with src.open("wb") as fh:  # 1 MiB random blocks, each salted: no two alike, cheap to write
        for i in range(int(gb * 1024)):
            fh.write(i.to_bytes(8, "little") + block[8:])
    out: dict[str, object] = {"bytes": src.stat().st_size}
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_DISABLE_XET")}
        for step in ("upload", "download"):
            run_env = {**env, "HF_HUB_DISABLE_XET": "1"}
            client = subprocess.Popen(
                [sys.executable, "-c", LARGE_CLIENT, server.url, server.token, str(src), str(work / "cache"), step],
                env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            stop, peaks = threading.Event(), dict[int, int]()
            sampler = threading.Thread(target=_peak_rss, args=([client.pid, server.proc.pid], stop, peaks))
            server_base = server.rss()
            sampler.start()
            stdout, stderr = client.communicate()
            stop.set()
            sampler.join()
            if client.returncode != 0:
                raise RuntimeError(f"{step} failed: {stderr[-2000:]}")
            out[step] = {
                "seconds": float(stdout.strip().splitlines()[-1]),
                "client_peak_MB": round(peaks.get(client.pid, 0) / 2**20),
                "server_peak_MB": round(peaks.get(server.proc.pid, 0) / 2**20),
                "server_before_MB": round(server_base / 2**20),
            }
            print(f"large file {step}: {out[step]}", file=sys.stderr, flush=True)
        # A stock client with Xet on (hf_xet installed, no setting): what does it get?
        xet = subprocess.run(
            [sys.executable, "-c", LARGE_CLIENT.replace('"model.safetensors", repo_id', '"xet.safetensors", repo_id'),
             server.url, server.token, str(src), str(work / "cache2"), "upload"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        last = (xet.stderr.strip().splitlines() or [""])[-1]
        out["xet_on"] = "ok" if xet.returncode == 0 else last[:300]
    finally:
        server.stop()
    return out


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
    parser.add_argument("--upstream-tests", type=Path, default=None,
                        help="huggingface_hub's tests/ folder: run its server-facing tests against old and new")  # fmt: skip
    parser.add_argument("--upstream-select", default="", help="pytest -k expression for --upstream-tests")
    parser.add_argument("--large-file", type=float, default=0, help="GB: one stock-client upload + download over LFS")
    args = parser.parse_args()
    if args.large_file:
        work = Path(tempfile.mkdtemp(prefix="bench-hub-large-"))
        try:
            print(f"large file: {json.dumps(large_file(args.large_file, work))}; load avg {os.getloadavg()[0]:.1f}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    if args.upstream_tests is not None:
        work = Path(tempfile.mkdtemp(prefix="bench-hub-upstream-"))
        try:
            impls = {"new": REPO}
            if args.old:
                (work / "old").mkdir()
                impls = {"old": old_tree(args.old, work / "old"), **impls}
            for name, path in impls.items():
                print(f"{name}: huggingface_hub's tests ...", file=sys.stderr, flush=True)
                result = upstream_tests(
                    path, args.upstream_tests.resolve(), work, name=name, select=args.upstream_select
                )
                print(f"upstream {name}: {result['counts']} in {result['seconds']} s; stubbed {result['stubbed']}")
                for line in result["failures"]:  # type: ignore[attr-defined]
                    print(f"  FAIL {name} {line}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return

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
