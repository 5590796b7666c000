"""Webhooks: management routes (`/api/settings/webhooks*`) and outbound delivery.

Delivery: one worker thread per webhook (events to one URL arrive in order; a slow URL does not
hold up the others), `webhook_attempts` tries with exponential backoff, and one line per try in
`<data>/webhook-deliveries.jsonl` (webhook id, event, attempt, HTTP status or `"failed"`; never
why a connection failed, so the log cannot be used to scan ports).

Targets (SSRF): link-local, private, loopback, multicast and reserved addresses are refused at
registration AND at each delivery (the name is resolved again and the checked address is the one
connected to, so DNS rebinding cannot slip through), unless the operator allowed them with
`--webhook-allow CIDR|HOST`; loopback is allowed while the hub itself listens on loopback.
Redirects are never followed. The secret
travels as-is in `X-Webhook-Secret`, as on the Hub (no HMAC). Payloads follow the Hub's v3
format and send both `repo.headSha` (Hub docs) and `repo.head_sha` (huggingface_hub's model).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import queue
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from registry.localhub.http import Request, Response
from registry.localhub.names import InvalidInput, NotAllowed, NotFound
from registry.localhub.routes_repos import web_path
from registry.localhub.storage import RepoStore, atomic_write_json, now_iso, read_json

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

logger = logging.getLogger(__name__)
_WATCH_TYPES = ("user", "org", "model", "dataset", "space")
_DOMAINS = ("repo", "discussion")


class WebhookDispatcher:
    """Stores webhooks and delivers events to the matching ones."""

    def __init__(self, hub: LocalHub) -> None:
        self._hub = hub
        self.path = hub.data_dir / "webhooks.json"
        self.log_path = hub.data_dir / "webhook-deliveries.jsonl"
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue[dict[str, Any] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.base_url = "http://127.0.0.1"
        self.policy = TargetPolicy(hub.config.webhook_allow, loopback_ok=True)

    # -- storage -----------------------------------------------------------------------------
    def load(self) -> dict[str, dict[str, Any]]:
        return read_json(self.path) if self.path.is_file() else {}

    @contextmanager
    def edit(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The stored webhooks, under the lock; saved atomically when the block ends without error."""
        with self._lock:
            hooks = self.load()
            yield hooks
            atomic_write_json(self.path, hooks)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every logged delivery attempt, oldest first."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    # -- events ------------------------------------------------------------------------------
    def emit_repo(
        self,
        store: RepoStore,
        *,
        scope: str,
        action: str,
        updated_refs: list[tuple[str, str | None, str | None]] | None = None,
        moved_to: str | None = None,
    ) -> None:
        """Send a `repo*` event (create, delete, update, move, content updates with their refs)."""
        payload: dict[str, Any] = {"event": {"action": action, "scope": scope}, "repo": self._repo(store, head=True)}
        if moved_to is not None:
            payload["movedTo"] = {"name": moved_to, "owner": {"id": moved_to.split("/")[0]}}
        if updated_refs is not None:
            payload["updatedRefs"] = [{"ref": r, "oldSha": o, "newSha": n} for r, o, n in updated_refs]
        self._dispatch(store, "repo", payload)

    def emit_discussion(
        self, store: RepoStore, *, scope: str, action: str, discussion: dict[str, Any], comment: dict[str, Any] | None
    ) -> None:
        """Send a `discussion*` event; `discussion` and `comment` are the stored records."""
        base = self.base_url + web_path(store.repo_type, store.repo_id)
        d = {
            "id": discussion["id"],
            "num": discussion["num"],
            "author": {"id": discussion["author"]["name"]},
            "title": discussion["title"],
            "isPullRequest": discussion["isPullRequest"],
            "status": discussion["status"],
            "url": {
                "web": f"{base}/discussions/{discussion['num']}",
                "api": f"{self.base_url}/api/{store.repo_type}s/{store.repo_id}/discussions/{discussion['num']}",
            },
        }
        if discussion["isPullRequest"]:
            d["changes"] = {"base": discussion["changes"]["base"]}
        payload: dict[str, Any] = {
            "event": {"action": action, "scope": scope},
            "repo": self._repo(store, head=False),
            "discussion": d,
        }
        if comment is not None:
            payload["comment"] = {
                "id": comment["id"],
                "author": {"id": comment["author"]["name"]},
                "hidden": comment["data"]["hidden"],
                "content": comment["data"]["latest"]["raw"],
                "url": {"web": f"{base}/discussions/{discussion['num']}#{comment['id']}"},
            }
        self._dispatch(store, "discussion", payload)

    def _repo(self, store: RepoStore, *, head: bool) -> dict[str, Any]:
        info = store.info
        out: dict[str, Any] = {
            "type": store.repo_type,
            "name": store.repo_id,
            "id": info["objectId"],
            "private": bool(info.get("private")),
            "url": {
                "web": self.base_url + web_path(store.repo_type, store.repo_id),
                "api": f"{self.base_url}/api/{store.repo_type}s/{store.repo_id}",
            },
            "owner": {"id": store.repo_id.split("/")[0]},
        }
        if head:
            sha = store.refs()["heads"].get("main")
            out["headSha"] = out["head_sha"] = sha
        return out

    def _dispatch(self, store: RepoStore, domain: str, payload: dict[str, Any]) -> None:
        ns = store.repo_id.split("/")[0]
        private = bool(store.info.get("private"))
        for hook_id, hook in self.load().items():
            if hook.get("disabled") or domain not in hook.get("domains", _DOMAINS):
                continue
            if not any(_matches(w, store, ns) for w in hook.get("watched", [])):
                continue
            if private and not self._owner_can_read(hook["owner"], ns):
                continue
            body = {**payload, "webhook": {"id": hook_id, "version": 3}}
            self._queue(hook_id).put({"url": hook["url"], "secret": hook.get("secret"), "body": body})

    def _owner_can_read(self, owner: str, ns: str) -> bool:
        return owner.lower() == ns.lower() or ns.lower() in {o.lower() for o in self._hub.accounts.orgs_of(owner)}

    # -- delivery ----------------------------------------------------------------------------
    def _queue(self, hook_id: str) -> queue.Queue[dict[str, Any] | None]:
        with self._lock:
            if hook_id not in self._queues:
                q: queue.Queue[dict[str, Any] | None] = queue.Queue()
                t = threading.Thread(target=self._worker, args=(hook_id, q), name=f"webhook-{hook_id}", daemon=True)
                self._queues[hook_id] = q
                self._threads.append(t)
                t.start()
            return self._queues[hook_id]

    def _worker(self, hook_id: str, q: queue.Queue[dict[str, Any] | None]) -> None:
        while (job := q.get()) is not None and not self._stopping.is_set():
            self._deliver(hook_id, job)

    def _deliver(self, hook_id: str, job: dict[str, Any]) -> None:
        cfg = self._hub.config
        data = json.dumps(job["body"]).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "mergeling-localhub"}
        if job["secret"]:
            headers["X-Webhook-Secret"] = job["secret"]
        event = job["body"]["event"]
        for attempt in range(1, cfg.webhook_attempts + 1):
            status: int | None = None
            try:
                status = post_once(job["url"], data, headers, policy=self.policy, timeout=10)
            except (OSError, ValueError, http.client.HTTPException, TargetRefused) as exc:
                logger.info("Webhook %s attempt %d to %s failed: %s", hook_id, attempt, job["url"], exc)
            self._log(hook_id=hook_id, event=event, attempt=attempt, status=status, error=None if status else "failed")
            if status is not None and 200 <= status < 300:
                return
            if status is not None and status < 500 and status not in (408, 429):
                return  # the receiver rejected it (or redirected it: never followed): retrying would not help
            if attempt < cfg.webhook_attempts and self._stopping.wait(cfg.webhook_backoff_s * 2 ** (attempt - 1)):
                return  # the server is stopping: pending retries are dropped (and were logged)
        logger.warning(
            "Webhook %s: giving up on a %s event after %d attempts", hook_id, event["scope"], cfg.webhook_attempts
        )

    def _log(self, **fields: Any) -> None:
        line = json.dumps({"time": now_iso(), **fields}) + "\n"
        with self._lock, self.log_path.open("a") as fh:
            fh.write(line)
        logger.info(
            "Webhook %s delivery attempt %s: %s",
            fields["hook_id"],
            fields["attempt"],
            fields["status"] or fields["error"],
        )

    def close(self) -> None:
        """Stop the workers: deliveries in flight finish, queued events and retries are dropped."""
        self._stopping.set()
        with self._lock:
            for q in self._queues.values():
                q.put(None)
        for t in self._threads:
            t.join(timeout=2)


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
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return True
        if ip.is_loopback:
            return self.loopback_ok
        return not (
            ip.is_private
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        )

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


def _matches(watch: dict[str, str], store: RepoStore, ns: str) -> bool:
    name = str(watch.get("name", "")).lower()
    if watch.get("type") in ("user", "org"):
        return name == ns.lower()
    return watch.get("type") == store.repo_type and name == store.repo_id.lower()


# -- management routes -------------------------------------------------------------------------
def _public(hook_id: str, hook: dict[str, Any]) -> dict[str, Any]:
    out = {k: hook[k] for k in ("url", "watched", "domains", "disabled")}
    if hook.get("secret"):
        out["secret"] = hook["secret"]
    return {"id": hook_id, **out}


def _validated(body: dict[str, Any], base: dict[str, Any], policy: TargetPolicy) -> dict[str, Any]:
    hook = dict(base)
    if "watched" in body:
        watched = body["watched"]
        if not isinstance(watched, list) or not all(
            isinstance(w, dict) and w.get("type") in _WATCH_TYPES and isinstance(w.get("name"), str) for w in watched
        ):
            raise InvalidInput(
                f"'watched' must be a list of {{type, name}} with type in {', '.join(_WATCH_TYPES)}",
                code="BadRequest",
            )
        hook["watched"] = [{"type": w["type"], "name": w["name"]} for w in watched]
    if body.get("domains") is not None:
        if not isinstance(body["domains"], list) or not set(body["domains"]) <= set(_DOMAINS) or not body["domains"]:
            raise InvalidInput(f"'domains' must be a non-empty subset of {list(_DOMAINS)}", code="BadRequest")
        hook["domains"] = list(body["domains"])
    if body.get("url") is not None:
        if not isinstance(body["url"], str) or not body["url"].startswith(("http://", "https://")):
            raise InvalidInput(f"Webhook url {body['url']!r} must start with http:// or https://")
        try:
            policy.resolve(body["url"])
        except TargetRefused as exc:
            raise InvalidInput(f"Webhook url refused: {exc}") from None
        except (OSError, UnicodeError):
            pass  # not resolvable now; checked again at each delivery
        hook["url"] = body["url"]
    if "secret" in body:
        hook["secret"] = body["secret"] or None
    if body.get("jobSourceId") or body.get("secrets"):
        raise InvalidInput("Job webhooks are not supported by this hub; give a 'url' instead", code="BadRequest")
    if not hook.get("url"):
        raise InvalidInput("A webhook needs a 'url'", code="BadRequest")
    return hook


def route(hub: LocalHub, req: Request, rest: list[str]) -> Response:
    who = hub.require_user(req)
    hooks = hub.webhooks
    mine = {k: v for k, v in hooks.load().items() if v["owner"] == who.name}
    if not rest:
        if req.method == "GET":
            return Response.json([_public(k, v) for k, v in mine.items()])
        if req.method == "POST":
            body = req.json(limit=hub.config.max_json_bytes)
            hook = _validated(
                body,
                {
                    "owner": who.name,
                    "watched": [],
                    "domains": list(_DOMAINS),
                    "disabled": False,
                    "createdAt": now_iso(),
                },
                hooks.policy,
            )
            hook_id = secrets.token_hex(12)
            with hooks.edit() as current:
                current[hook_id] = hook
            return Response.json({"webhook": _public(hook_id, hook)})
    if not rest:
        raise NotAllowed(f"{req.method} is not allowed on /api/settings/webhooks; use GET or POST")
    hook_id = rest[0]
    if hook_id not in mine:
        raise NotFound(f"Webhook {hook_id!r} not found among {who.name!r}'s webhooks")
    action = rest[1] if len(rest) > 1 else ""
    if req.method == "GET" and action == "":
        return Response.json({"webhook": _public(hook_id, mine[hook_id])})
    if req.method == "GET" and action == "deliveries":
        return Response.json([d for d in hooks.deliveries() if d["hook_id"] == hook_id])
    if req.method == "DELETE" and action == "":
        with hooks.edit() as current:
            current.pop(hook_id, None)
        return Response.json({})
    if req.method == "POST" and action in ("", "enable", "disable"):
        body = req.json(limit=hub.config.max_json_bytes) if action == "" else {}
        with hooks.edit() as current:
            hook = _validated(body, current[hook_id], hooks.policy)
            if action:
                hook["disabled"] = action == "disable"
            current[hook_id] = hook
        return Response.json({"webhook": _public(hook_id, hook)})
    raise NotFound(f"No route for {req.method} /api/settings/webhooks/{'/'.join(rest)}")
