"""Where webhooks may deliver (SSRF guard) and the one-shot, redirect-free POST that delivers.

Link-local, private, loopback, multicast and reserved addresses are refused unless allowed
(`--webhook-allow CIDR|HOST`, loopback while the hub listens on loopback). Names are resolved at
registration and again at every delivery, and the connection goes to the address just checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class TargetRefused(Exception):
    """A webhook target this hub will not connect to."""


class TargetPolicy:
    """Which addresses webhooks may reach.

    Args:
        allow: CIDRs (`10.0.0.0/8`, `::1/128`) or host names the operator allowed (`--webhook-allow`).
        loopback_ok: allow loopback targets (the hub listens on loopback, so local bots can use it).
    """

    def __init__(self, allow: tuple[str, ...] | list[str], *, loopback_ok: bool) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        for item in allow:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.hosts.add(item.lower().rstrip("."))
        self.loopback_ok = loopback_ok

    def address_ok(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Allowed by the operator, loopback while allowed, else only a globally routable address.

        `is_global` refuses what `is_private` misses (carrier-grade NAT 100.64.0.0/10, used by cloud
        metadata services, benchmarking and documentation ranges, ...). IPv6 forms that carry an
        IPv4 address are judged by it or refused: IPv4-mapped (`::ffff:a.b.c.d`) and 6to4
        (`2002:AABB:CCDD::`) by the embedded address; Teredo (2001::/32) and NAT64 (64:ff9b::/96,
        64:ff9b:1::/48), which a gateway may turn into any IPv4 address, always.
        """
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip.sixtofour is not None:
                inner = ip.sixtofour
                return any(ip in net or inner in net for net in self.networks) or (
                    inner.is_global and self.address_ok(inner)
                )
        if any(ip in net for net in self.networks):
            return True
        if ip.is_loopback:
            return self.loopback_ok
        if isinstance(ip, ipaddress.IPv6Address) and (ip.teredo is not None or any(ip in n for n in _NAT64)):
            return False
        return ip.is_global and not ip.is_multicast and not ip.is_reserved

    def resolve(self, url: str) -> tuple[str, int, str, list[str]]:
        """(scheme, port, host, checked addresses) of `url`.

        Raises:
            TargetRefused: a bad URL, or a name with any address this policy refuses.
            OSError: the name does not resolve.
        """
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused(f"{url!r} is not an http(s) URL with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise TargetRefused(f"{url!r} has an invalid port") from None
        host = parts.hostname.lower().rstrip(".")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if host not in self.hosts:
            refused = [a for a in addresses if not self.address_ok(ipaddress.ip_address(a.split("%")[0]))]
            if refused or not addresses:
                raise TargetRefused(
                    f"{host} resolves to {', '.join(refused) or 'nothing'}: private, loopback, link-local and "
                    "multicast targets are refused unless the hub operator allows them "
                    "(registry hub serve --webhook-allow CIDR|HOST)"
                )
        return parts.scheme, port, host, addresses


def post_once(url: str, data: bytes, headers: dict[str, str], *, policy: TargetPolicy, timeout: float) -> int:
    """POST `data` to `url` once, to an address checked just now; the HTTP status (redirects not followed).

    Raises:
        TargetRefused: the target is not allowed (now).
        OSError, http.client.HTTPException: the delivery failed.
    """
    from urllib.parse import urlsplit

    scheme, port, host, addresses = policy.resolve(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _PinnedHTTPS(host, port, addresses[0], timeout=timeout, context=ssl.create_default_context())
    else:
        conn = _PinnedHTTP(host, port, addresses[0], timeout=timeout)
    try:
        conn.request("POST", target, body=data, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        conn.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to `address` (already checked), with `host` in the Host header."""

    def __init__(self, host: str, port: int, address: str, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """`_PinnedHTTP` over TLS, verifying the certificate for `host`."""

    def __init__(self, host: str, port: int, address: str, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._context = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
