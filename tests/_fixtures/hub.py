"""Fixtures for a real embedded hub on 127.0.0.1, and clients pointed at it.

Two kinds of client, because huggingface_hub reads `HF_ENDPOINT` once, at import:

- In this process, use explicit endpoints: `hub.client()` (our `registry.hub.HubClient`) or
  `hub.api()` (a raw `HfApi(endpoint=hub.url, ...)`). Never rely on `HF_ENDPOINT` here: pytest
  imported huggingface_hub long before any fixture ran, so `constants.ENDPOINT` is huggingface.co.
- Anything that uses module-level helpers (`ModelCard.load`, `metadata_update`,
  `transformers.*.from_pretrained`, `datasets.load_dataset`) runs in a subprocess with
  `hub.env()`, which sets `HF_ENDPOINT`, `HF_TOKEN`, a fresh `HF_HOME`, Xet off (plus the
  user-agent marker that lets the server answer "lfs" for large files) and telemetry off
  *before* the child imports anything. `hub.run_python(code)` does exactly that.

Fixtures:
- `hub` (module scope): one server thread over a temp data dir, with users `alice` (write token,
  member of org `lab`), `bob` (write token, own namespace only) and a read-only token of alice.
  Tests share it within a module, so each test uses its own repo names.
- `hub_factory` (function scope): start extra servers (in-process thread or a real
  `registry hub serve` subprocess) on their own data dirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HubHandle:
    """A running hub and what a test needs to talk to it."""

    url: str
    data_dir: Path
    home: Path  # a fresh HF_HOME for clients of this hub
    token: str  # alice: write, member of org "lab"
    read_token: str  # alice: read-only
    bob_token: str  # bob: write to "bob" only
    user: str = "alice"
    org: str = "lab"
    process: subprocess.Popen[str] | None = None
    _stop: Any = field(default=None, repr=False)

    def client(self, token: str | None = None, *, cache: str = "cache") -> Any:
        """A `registry.hub.HubClient` on this hub (alice's write token by default)."""
        from registry.hub import HubClient

        return HubClient(endpoint=self.url, token=token or self.token, cache_dir=self.home / cache)

    def api(self, token: str | None = None) -> Any:
        """A raw `huggingface_hub.HfApi` on this hub, Xet disabled as the product does."""
        from huggingface_hub import HfApi, constants

        constants.HF_HUB_DISABLE_XET = True
        return HfApi(endpoint=self.url, token=token or self.token, headers={"X-Mergeling-Xet": "disabled"})

    def env(self, *, token: str | None = None, home: Path | None = None, **extra: str) -> dict[str, str]:
        """Environment for a client subprocess (set before it imports huggingface_hub)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=self.url,
            HF_TOKEN=token or self.token,
            HF_HOME=str(home or self.home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_USER_AGENT_ORIGIN="mergeling-no-xet",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_UPDATE_DOWNLOAD_COUNTS="0",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_DATASETS_DISABLE_PROGRESS_BARS="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONPATH=str(REPO_ROOT),
        )
        env.update(extra)
        return env

    def run_python(self, code: str, *, timeout: float = 120, **env_kw: Any) -> subprocess.CompletedProcess[str]:
        """Run `code` in a fresh interpreter with `env()`; fail the test with its stderr if it fails."""
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(**env_kw),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )
        if proc.returncode != 0:
            pytest.fail(f"client subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc

    def make_token(self, user: str, *, org: str | None = None, write: bool = True) -> str:
        from registry.localhub.auth import Accounts

        return Accounts(self.data_dir).create_token(user, org=org, write=write)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def _tokens(data_dir: Path) -> dict[str, str]:
    from registry.localhub.auth import Accounts

    accounts = Accounts(data_dir)
    return {
        "token": accounts.create_token("alice", org="lab", write=True, name="test-write"),
        "read_token": accounts.create_token("alice", write=False, name="test-read"),
        "bob_token": accounts.create_token("bob", write=True, name="bob-write"),
    }


def start_thread_hub(data_dir: Path, home: Path, **config: Any) -> HubHandle:
    """An in-process server thread on a free port of 127.0.0.1."""
    from registry.localhub import EmbeddedHub
    from registry.localhub.app import HubConfig

    tokens = _tokens(data_dir)
    hub = EmbeddedHub.start(data_dir, config=HubConfig(**config))
    return HubHandle(url=hub.url, data_dir=data_dir, home=home, _stop=hub.stop, **tokens)


def spawn_hub_process(data_dir: Path, *, port: int = 0) -> subprocess.Popen[str]:
    """`registry hub serve --data DIR --port N` as a real process; returns once it prints its URL.

    The URL is the first stdout line (read it from `proc.url`).
    """
    cmd = [
        sys.executable,
        "-c",
        "from registry.cli import main; main()",
        "hub",
        "serve",
        "--data",
        str(data_dir),
        "--port",
        str(port),
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / "hub-server.log"  # a file, not a pipe: a full pipe would block the server
    with log.open("a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO_ROOT)
    line = proc.stdout.readline() if proc.stdout else ""  # "" when the process died first
    if not line.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"hub process did not start: {line!r}; see {log}:\n{log.read_text()[-2000:]}")
    proc.url = line.strip()  # type: ignore[attr-defined]
    return proc


def start_process_hub(data_dir: Path, home: Path, *, port: int = 0) -> HubHandle:
    """A `registry hub serve` subprocess; `handle.process` can be SIGKILLed by the test."""
    tokens = _tokens(data_dir)
    proc = spawn_hub_process(data_dir, port=port)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return HubHandle(url=proc.url, data_dir=data_dir, home=home, process=proc, _stop=stop, **tokens)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    """One embedded hub thread for the whole test module."""
    root = tmp_path_factory.mktemp("hub")
    handle = start_thread_hub(root / "data", root / "home")
    yield handle
    handle.stop()


class HubFactory:
    """Start extra hubs in a test; all are stopped at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: list[HubHandle] = []

    def thread(self, name: str = "t", **config: Any) -> HubHandle:
        handle = start_thread_hub(self.root / name / "data", self.root / name / "home", **config)
        self.handles.append(handle)
        return handle

    def process(self, name: str = "p", *, data_dir: Path | None = None, port: int = 0) -> HubHandle:
        data = data_dir or self.root / name / "data"
        handle = start_process_hub(data, self.root / name / "home", port=port)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        for handle in self.handles:
            handle.stop()


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[HubFactory]:
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()
