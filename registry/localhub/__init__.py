"""The embedded Hub-compatible server.

    hub = EmbeddedHub.start(Path("data"), port=0)   # a background thread on 127.0.0.1
    ... HfApi(endpoint=hub.url, token=...) ...
    hub.stop()

`registry hub serve` runs the same in the foreground. The protocol is specified in
../shared/docs/hub-protocol.md (the subset `huggingface_hub`, `transformers` and `datasets`
speak); docs/localhub.md describes this server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.localhub.app import HubConfig, LocalHub
    from registry.localhub.server import HttpServer


@dataclass
class EmbeddedHub:
    """A running server and its application."""

    app: LocalHub
    server: HttpServer

    @property
    def url(self) -> str:
        return self.server.url

    @classmethod
    def create(
        cls, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0, config: HubConfig | None = None
    ) -> EmbeddedHub:
        """Bind a server on `host:port` (0: a free port) over `data_dir`, not yet serving.

        Raises:
            OSError: the port is taken, or another server uses `data_dir`.
        """
        from registry.localhub.app import LocalHub
        from registry.localhub.edge import build_app
        from registry.localhub.server import HttpServer

        app = LocalHub(data_dir, config=config)
        try:
            server = HttpServer(build_app(app), host=host, port=port)
        except OSError:
            app.close()
            raise
        app.public_url = (app.config.public_url or server.url).rstrip("/")
        app.webhooks.base_url = app.public_url
        loopback = app.config.webhook_loopback
        app.webhooks.policy.loopback_ok = _is_loopback(host) if loopback is None else loopback
        return cls(app=app, server=server)

    @classmethod
    def start(
        cls, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0, config: HubConfig | None = None
    ) -> EmbeddedHub:
        """`create`, then serve from a background thread."""
        hub = cls.create(data_dir, host=host, port=port, config=config)
        hub.server.start()
        return hub

    def stop(self) -> None:
        self.server.stop()
        self.app.close()


def _is_loopback(host: str) -> bool:
    """Whether `host` (what the server binds) is a loopback interface: local bots may then get webhooks."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
