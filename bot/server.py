"""`registry bot serve`: the receiver under uvicorn, a worker thread, webhook registration, polling."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig
from bot.queue import JobQueue, trigger_key
from bot.receiver import create_app, watched
from bot.worker import Worker

if TYPE_CHECKING:
    from registry.hub import HubClient

log = logging.getLogger(__name__)


def register_webhooks(hub: HubClient, *, url: str, watch: tuple[str, ...], secret: str) -> list[str]:
    """Make sure a webhook to `url` watches every `--watch` name; reuse existing ones. Returns their ids."""
    existing = {hook.url: hook for hook in hub.list_webhooks()}
    items = []
    for name in watch:
        kind, _, plain = name.rpartition(":")
        items.append({"type": kind or "user", "name": plain})
    hook = existing.get(url)
    if hook is not None:
        have = {(w.type, w.name) for w in hook.watched}
        if all((i["type"], i["name"]) in have for i in items):
            return [hook.id]
        hub.delete_webhook(hook.id)
    created = hub.create_webhook(url=url, watched=items, domains=["repo"], secret=secret)
    return [created.id]


def worker_configs(config: BotConfig, workers: int | None, *, gpus: int | None = None) -> list[BotConfig]:
    """One config per worker thread.

    local: one worker on CPU; with `--device auto|cuda` and GPUs, one per GPU, each pinned to its
    `cuda:N` (an explicit `workers` takes the GPUs round-robin). ray: `workers` dispatchers
    (default 2), each waiting on one Ray task; Ray places the tasks.
    """
    import dataclasses

    if config.executor == "ray":
        return [config] * (workers if workers is not None else 2)
    if gpus is None:
        gpus = _gpu_count() if config.device in ("auto", "cuda") else 0
    count = workers if workers is not None else max(1, gpus)
    if not gpus:
        return [dataclasses.replace(config, device="cpu")] * count
    return [dataclasses.replace(config, device=f"cuda:{i % gpus}") for i in range(count)]


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except ImportError:
        return 0


def poll_once(config: BotConfig, queue: JobQueue, hub: HubClient) -> int:
    """List watched namespaces' CT repos; enqueue head revisions not seen yet. Returns how many."""
    from bot.pairing import CT_TAG

    added = 0
    for name in config.watch:
        owner = name.split(":", 1)[-1]
        for info in hub.list_models(author=owner, filter=CT_TAG):
            if not watched(config, info.id.split("/")[0]):
                continue
            sha = info.sha or hub.head_sha(info.id)
            if not sha or queue.is_replaced(info.id, sha):
                continue
            _, created = queue.enqueue(
                key=trigger_key(info.id, sha), kind="pair", ct_repo=info.id, ct_sha=sha, submitted_by=owner
            )
            added += int(created)
    return added


MAX_HEADER_BYTES = 64 * 1024  # a request line plus headers; a Hub delivery sends ~1 KB


def uvicorn_config(app: Any) -> Any:
    """How the bot's app is served: h11, whose parser refuses (400, connection closed) a request whose
    line and headers pass `MAX_HEADER_BYTES` before buffering more; httptools (uvicorn's default when
    installed) buffers headers without a bound (200 MB of headers: +201 MB RSS, measured)."""
    import uvicorn

    return uvicorn.Config(
        app, http="h11", h11_max_incomplete_event_size=MAX_HEADER_BYTES, log_level="warning", access_log=False,
        lifespan="off", timeout_keep_alive=5,
    )  # fmt: skip


@dataclass
class Service:
    """A running bot: HTTP server, worker and poller threads."""

    config: BotConfig
    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    poll_s: float | None = None
    register: bool = True
    public_url: str | None = None
    workers: int | None = None  # None: one per GPU, else one

    def run(self, *, on_ready: Any = None) -> None:
        """Serve until interrupted (SIGINT / SIGTERM)."""
        import uvicorn

        queue = self.config.open_queue()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without, a small answer waits ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn serves: the URL works once printed
        url = f"http://{self.host}:{sock.getsockname()[1]}"
        if on_ready is not None:
            on_ready(url)
        hub = self.config.hub()
        if self.register and self.config.watch:
            hook_url = (self.public_url or url).rstrip("/") + "/webhooks/hub"
            ids = register_webhooks(hub, url=hook_url, watch=self.config.watch, secret=self.secret)
            log.info("webhook %s delivers %s pushes to %s", ",".join(ids), ", ".join(self.config.watch), hook_url)
        stop = threading.Event()
        threads = [
            threading.Thread(target=Worker(config).loop, args=(stop,), name=f"worker-{i}", daemon=True)
            for i, config in enumerate(worker_configs(self.config, self.workers))
        ]
        if self.poll_s:
            threads.append(threading.Thread(target=self._poll, args=(queue, hub, stop), name="poll", daemon=True))
        for thread in threads:
            thread.start()
        app = create_app(self.config, queue, secret=self.secret, hub=hub)
        server = uvicorn.Server(uvicorn_config(app))
        try:
            server.run(sockets=[sock])
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5)

    def _poll(self, queue: JobQueue, hub: HubClient, stop: threading.Event) -> None:
        assert self.poll_s
        while not stop.is_set():
            try:
                added = poll_once(self.config, queue, hub)
                if added:
                    log.info("poll: %d new revision(s) queued", added)
            except Exception as exc:  # noqa: BLE001 (the next round tries again)
                log.warning("poll failed: %s", exc)
            stop.wait(self.poll_s)
