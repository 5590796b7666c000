"""Helpers to run the bot in-process against an embedded hub (test fixtures; bench/bench_bot.py uses them too).

- `BotServer`: the receiver under a real uvicorn on 127.0.0.1 (a thread), stopped by `stop()`.
- `push_checkpoint`: upload a model folder with the card metadata a researcher would write.
- `eval_fixture`: a one-task suite (FLORES bits per byte) with a few generated sentences, so the
  evaluation step runs for real without the shared data.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.config import BotConfig
from bot.queue import JobQueue
from bot.receiver import create_app
from bot.server import uvicorn_config


@dataclass
class BotServer:
    """The bot's ASGI app served by uvicorn in a thread."""

    config: BotConfig
    queue: JobQueue
    secret: str | None
    hub: Any = None
    rate_limit: Any = None
    url: str = ""
    _server: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> BotServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(self.config, self.queue, secret=self.secret, hub=self.hub, rate_limit=self.rate_limit)
        self._server = uvicorn.Server(uvicorn_config(app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def card_text(meta: dict[str, Any], title: str) -> str:
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {title}\n"


def push_checkpoint(hub: Any, folder: Path, repo: str, meta: dict[str, Any], *, message: str = "Upload") -> str:
    """Upload `folder` to `repo` (created if missing) with a README carrying `meta`; return the commit."""
    hub.create_repo(repo, exist_ok=True)
    add: dict[str, bytes | Path] = {
        p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "README.md"
    }
    add["README.md"] = card_text(meta, repo).encode()
    return str(hub.commit_files(repo, message=message, add=add))


def ct_meta(language: str, base: str) -> dict[str, Any]:
    return {"language": [language, "en"], "base_model": base, "tags": ["mergeling-ct"], "license": "mit"}


def sft_meta(base: str) -> dict[str, Any]:
    return {"language": ["en"], "base_model": base, "tags": ["mergeling-sft"], "license": "apache-2.0"}


SENTENCES = [
    "The river rises in the hills and flows to the sea.",
    "Farmers plant rice when the first rains come.",
    "The library opens at nine and closes at six.",
    "A small boat crossed the lake before sunrise.",
    "Children walked to school along the old road.",
    "The market sells fish, fruit and cloth.",
]


def eval_fixture(root: Path, language: str = "ben_Beng") -> tuple[Path, Path]:
    """Write `root/suites/<language>.yaml` (FLORES only) and its test and dev data under `root/data/flores200/`.

    Returns:
        (suites dir, data dir).
    """
    suites, data = root / "suites", root / "data"
    suites.mkdir(parents=True, exist_ok=True)
    (suites / f"{language}.yaml").write_text(f"language: {language}\ntasks:\n  - {{task: flores_{language}}}\n")
    flores = data / "flores200" / "devtest"
    flores.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, "lang": language, "text": text}) for i, text in enumerate(SENTENCES)]
    (flores / f"{language}.jsonl").write_text("\n".join(lines) + "\n")
    dev = data / "flores200" / "dev_subset_from_sib200"
    dev.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, "lang": language, "text": text[::-1]}) for i, text in enumerate(SENTENCES)]
    (dev / f"{language}.jsonl").write_text("\n".join(lines) + "\n")
    return suites, data


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `predicate()` until it returns something truthy; raise TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")
