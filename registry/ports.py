"""Checking that a local service can listen before it starts (hub, bot, Space).

uvicorn and Gradio report a taken port with a traceback (Gradio: 41 lines suggesting
GRADIO_SERVER_PORT). `ensure_port_free` binds the address first, the way the server will, and turns
a refusal into one line that names the option to change.
"""

from __future__ import annotations

import errno
import socket

from registry.errors import PortInUseError


def ensure_port_free(host: str, port: int, *, service: str, option: str = "--port") -> None:
    """Raise `PortInUseError` when `host:port` cannot be bound (port 0 always can).

    A race with another process binding the port right after the check stays possible: the servers'
    own errors then apply. SO_REUSEADDR as uvicorn and Gradio set it, so a port in TIME_WAIT counts
    as free exactly when they can use it.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} is in use on {host}: pass {option} (another port, or 0 for any free one) "
                    f"or stop what is listening there; the {service} did not start",
                    host=host,
                    port=port,
                ) from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                reason = "is not an address of this machine" if exc.errno == errno.EADDRNOTAVAIL else "needs root"
                raise PortInUseError(
                    f"cannot listen on {host}:{port} ({reason}): pass another --host or {option}; "
                    f"the {service} did not start",
                    host=host,
                    port=port,
                ) from None
            raise
