"""`--executor ray --ray-address` on a real cluster of separate processes on this machine: a head
(`ray start --head`, no CPUs, so no job runs there) and worker nodes (`ray start --address`).

A job lands on node A and stalls in its merge (node A alone runs with MERGELING_BOT_STALL=merge);
node B joins; node A is stopped mid-job. Ray runs the task again on node B, and the job ends
published with exactly one commit. Skipped, with the reason, where `ray start` cannot start nodes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta, wait_for

ray = pytest.importorskip("ray")
REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """Ray nodes as `ray start --block` processes (SIGTERM stops a node and its workers)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        # Loopback only, for the test; a real cluster keeps Ray's token authentication (docs/bot.md).
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        head = name == "head"
        cmd = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *args]
        if head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.root}"]
        else:
            cmd += [f"--address={self.address}"]
        log = (self.root.parent / f"ray-{name}.log").open("ab")
        self.nodes[name] = subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=log, stderr=log,
                                            start_new_session=True)  # fmt: skip

    def stop(self, name: str) -> None:
        proc = self.nodes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def exited(self) -> str:
        """The nodes whose `ray start` process has ended (empty: all running)."""
        return ", ".join(f"{n}: exit {p.returncode}" for n, p in self.nodes.items() if p.poll() is not None)

    def close(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.root.parent / f"ray-{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.is_file() else ""


def _alive_cpu_nodes() -> dict[str, float]:
    return {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")}


@pytest.mark.slow
def test_a_job_on_a_killed_node_finishes_exactly_once_on_the_other(
    hub, tiny_family, tmp_path: Path, monkeypatch
) -> None:
    root = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = Cluster(root / "ray")
    alice, bob = hub.client(), hub.client(hub.bob_token, cache="bob-raycl")
    push_checkpoint(alice, tiny_family.base, "alice/rc-base", {"license": "mit"})
    push_checkpoint(alice, tiny_family.sft, "alice/rc-sft", sft_meta("alice/rc-base"))
    CatalogStore(hub=bob, repo_id="bob/rc-registry").add(
        build_sft_entry(bob, repo="alice/rc-sft", revision=None, base="alice/rc-base")
    )
    sha = push_checkpoint(alice, tiny_family.ct, "alice/rc-ct", ct_meta("bn", "alice/rc-base"))
    suites, data = eval_fixture(tmp_path / "eval")
    config = BotConfig(data=tmp_path / "bot", registry="bob/rc-registry", namespace="bob", endpoint=hub.url,
                       token=hub.bob_token, suites_dir=suites, data_dir=data, eval_limit=2, executor="ray",
                       ray_address=cluster.address)  # fmt: skip
    queue = config.open_queue()
    job, _ = queue.enqueue(key=trigger_key("alice/rc-ct", sha), kind="pair", ct_repo="alice/rc-ct", ct_sha=sha)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    runner: threading.Thread | None = None
    try:
        cluster.start("head", "--num-cpus=0")
        cluster.start("a", "--num-cpus=1", env={"MERGELING_BOT_STALL": "merge"})
        try:
            wait_for(lambda: cluster.exited() or (root / "ray" / "session_latest").exists(), timeout=120)
            if cluster.exited():
                raise RuntimeError(f"`ray start` exited ({cluster.exited()})")
            ray.init(address=cluster.address, log_to_driver=False)
            wait_for(lambda: cluster.exited() or len(_alive_cpu_nodes()) == 1, timeout=120, interval=0.5)
            if cluster.exited():
                raise RuntimeError(f"`ray start` exited ({cluster.exited()})")
        except Exception as exc:  # noqa: BLE001 (the machine cannot run a Ray cluster: say why)
            tails = " | ".join(f"{n}: {cluster.log(n)[-300:]!r}" for n in ("head", "a"))
            pytest.skip(f"ray start could not start a head and a worker node on this machine ({exc}); {tails}")
        [node_a] = _alive_cpu_nodes()

        worker = Worker(config, queue, hub=bob)  # joins the running driver connection
        runner = threading.Thread(target=worker.run_until_idle, daemon=True)
        runner.start()
        wait_for(lambda: (config.data / "stalled-merge").is_file(), timeout=180, interval=0.5)  # mid-job on A

        cluster.start("b", "--num-cpus=1")
        wait_for(lambda: len(_alive_cpu_nodes()) == 2, timeout=120, interval=0.5)
        [node_b] = set(_alive_cpu_nodes()) - {node_a}
        cluster.stop("a")  # node A dies with the job's merge in flight

        runner.join(timeout=300)
        assert not runner.is_alive(), "the job did not finish after node A was stopped"
        done = queue.get(job.id)
        assert done is not None and done.state == "published", (done and done.state, done and done.error)
        assert done.data.ray_node == node_b  # finished on the node that remained
        commits = bob.api.list_repo_commits(done.output_repo)
        merges = [c for c in commits if c.title.startswith("Merge alice/rc-ct@")]
        assert len(merges) == 1 and merges[0].commit_id == done.data.commit  # exactly once
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.close()
        if runner is not None:
            runner.join(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
