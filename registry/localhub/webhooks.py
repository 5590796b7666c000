"""Webhooks: management routes (`/api/settings/webhooks*`) and outbound delivery.

Delivery: one worker thread per webhook (events to one URL arrive in order; a slow URL does not
hold up the others), `webhook_attempts` tries with jittered exponential backoff
(`registry.retry`), and one line per try in `<data>/webhook-deliveries.jsonl`: webhook id, event,
attempt, `delivered` true or false, and for false one generic reason. The webhook's owner reads
that log, and it must not work as a port scanner: an open port answering 404 (or 302, or hanging
up) and a closed port read the same, with the same retries at jittered times. Neither the status
code nor why a connection failed is logged there (the operator's log has the details).

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
import json
import logging
import queue
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from registry.localhub.http import Request, Response
from registry.localhub.names import InvalidInput, NotAllowed, NotFound, web_path
from registry.localhub.storage import RepoStore, atomic_write_json, now_iso, read_json
from registry.localhub.webhook_targets import TargetPolicy, TargetRefused, post_once
from registry.retry import Backoff, retry

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

logger = logging.getLogger(__name__)
_WATCH_TYPES = ("user", "org", "model", "dataset", "space")
_DOMAINS = ("repo", "discussion")
NOT_DELIVERED = "the target did not answer with a 2xx status"  # the one reason the owner sees
BACKOFF_CAP_S = 60.0


class _NotDelivered(Exception):
    """One attempt got no 2xx answer (the cause stays in the operator's log)."""


class _Stopping(Exception):
    """The server is stopping: pending retries are dropped."""


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
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            status: int | None = None
            try:
                status = post_once(job["url"], data, headers, policy=self.policy, timeout=10)
            except (OSError, ValueError, http.client.HTTPException, TargetRefused) as exc:
                logger.info("Webhook %s attempt %d to %s failed: %s", hook_id, attempts, job["url"], exc)
            else:
                logger.info("Webhook %s attempt %d to %s: HTTP %d", hook_id, attempts, job["url"], status)
            delivered = status is not None and 200 <= status < 300
            # Every failure is retried alike (a 404 or a redirect too): stopping early on some answers
            # would tell the owner an open port from a closed one by the number of attempts.
            self._log(hook_id=hook_id, event=event, attempt=attempts, delivered=delivered,
                      **({} if delivered else {"reason": NOT_DELIVERED}))  # fmt: skip
            if not delivered:
                raise _NotDelivered

        def pause(seconds: float) -> None:
            if self._stopping.wait(seconds):
                raise _Stopping

        backoff = Backoff(
            attempts=cfg.webhook_attempts,
            first_s=cfg.webhook_backoff_s,
            cap_s=BACKOFF_CAP_S,
            jitter="full",
            sleep=pause,
        )
        try:
            retry(attempt, on=_NotDelivered, backoff=backoff, what=f"webhook {hook_id} delivery")
        except _NotDelivered:
            logger.warning("Webhook %s: giving up on a %s event after %d attempts", hook_id, event["scope"], attempts)
        except _Stopping:
            return  # the server is stopping: pending retries are dropped (the attempts made were logged)

    def _log(self, **fields: Any) -> None:
        line = json.dumps({"time": now_iso(), **fields}) + "\n"
        with self._lock, self.log_path.open("a") as fh:
            fh.write(line)

    def close(self) -> None:
        """Stop the workers: deliveries in flight finish, queued events and retries are dropped."""
        self._stopping.set()
        with self._lock:
            for q in self._queues.values():
                q.put(None)
        for t in self._threads:
            t.join(timeout=2)


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
    who = hub.require_user(req) if req.method == "GET" else hub.require_writer(req, action="change webhooks")
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
