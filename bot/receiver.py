"""The bot's HTTP API (Starlette): the Hub webhook receiver, the job list and manual submissions.

`POST /webhooks/hub` checks `X-Webhook-Secret` in constant time (401 missing, 403 wrong), parses
the body with huggingface_hub's `WebhookPayload`, commits one queue row and answers 202; it never
calls the Hub or merges in the request. Repos that are not models, outside `--watch`, pushes to
other branches and older revisions get 200 `{"ignored": reason}`.

`POST /jobs` (what the Space calls) needs a Hub token: its user must be able to write to the CT
(checked against the Hub), is rate-limited per user, and gets the same validation and dedupe as a
webhook, answered at once: 422 with every reason when the CT cannot be merged. An optional
`recipe` (parts or a full recipe text, `bot.models.RecipeRequest`) is validated by the engine's
`Recipe` (400 with one line when it does not validate) and merged into its own output repo.
Every job records `submitted_by`; `GET /jobs?mine=true` lists the token's user's jobs.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.access import ReadCheck
from bot.config import BotConfig
from bot.errors import public_text
from bot.models import JobSpec, RecipeRequest
from bot.queue import Job, JobQueue, trigger_key

if TYPE_CHECKING:
    from registry.hub import HubClient

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # a Hub webhook payload is a few KB


@dataclass
class RateLimiter:
    """At most `limit` requests per `window_s` per key (a sliding window)."""

    limit: int = 10
    window_s: float = 60.0
    _hits: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is larger than MAX_BODY (read no further)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


def watched(config: BotConfig, owner: str) -> bool:
    names = {w.split(":", 1)[-1] for w in config.watch}
    return not names or owner in names


def webhook_decision(config: BotConfig, queue: JobQueue, body: bytes) -> tuple[int, dict[str, Any]]:
    """What to do with one delivery: (status, JSON body). Writes at most one queue row."""
    from huggingface_hub import WebhookPayload
    from pydantic import ValidationError

    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return 400, {"error": f"malformed JSON: {exc.__class__.__name__} at position {getattr(exc, 'pos', 0)}"}
    except RecursionError:
        return 400, {"error": "JSON nested too deeply: a Hub webhook payload is a few levels deep"}
    try:
        payload = WebhookPayload.model_validate(raw)
    except ValidationError as exc:
        return 400, {"error": f"not a Hub webhook payload (v3): {exc.error_count()} invalid fields"}
    repo = payload.repo
    if repo.type != "model":
        return 200, {"ignored": f"{repo.type} repo {repo.name}: the bot merges model repos only"}
    if not payload.event.scope.startswith("repo.content"):
        return 200, {"ignored": f"event {payload.event.scope}/{payload.event.action}: not a push"}
    owner = repo.name.split("/")[0]
    if not watched(config, owner):
        return 200, {"ignored": f"{repo.name} is outside the watched namespaces"}
    sha, old = repo.head_sha or raw.get("repo", {}).get("headSha"), None
    for ref in payload.updatedRefs or []:
        if ref.ref == "refs/heads/main":
            sha, old = ref.newSha, ref.oldSha
            break
    else:
        if payload.updatedRefs:
            return 200, {"ignored": "the push did not move main"}
    if not sha:
        return 200, {"ignored": "main was deleted"}
    if queue.is_replaced(repo.name, sha):
        return 200, {"ignored": f"revision {sha[:7]} of {repo.name} was already replaced by a newer one"}
    job, _ = queue.enqueue(
        key=trigger_key(repo.name, sha), kind="pair", ct_repo=repo.name, ct_sha=sha, replaces=[old] if old else [],
        submitted_by=owner,  # a delivery names no pusher: the CT repo's owner asked, by pushing
    )  # fmt: skip
    return 202, {"jobs": [job.id]}


def recipe_request(value: Any) -> RecipeRequest:
    """The `recipe` of a POST /jobs body: parts (an object) or a full recipe (a string), validated.

    Raises:
        RecipeError: one line naming the field and what to send.
    """
    from pydantic import ValidationError

    from bot.recipes import custom_recipe
    from registry.errors import RecipeError

    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise RecipeError("recipe: send an object (method, density, slack, weights, parameters) or a recipe's text")
    try:
        request = RecipeRequest.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("recipe", *err["loc"]))
        raise RecipeError(f"{where}: {err['msg']}; see docs/bot.md (HTTP API)") from None
    custom_recipe(request)  # the engine's refusal, before the Hub is asked anything
    return request


def submit_job(
    config: BotConfig,
    queue: JobQueue,
    hub: HubClient,
    token: str,
    body: dict[str, Any],
    *,
    user: str | None = None,
    base_url: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """`POST /jobs` after the rate limit: recipe, write check with the user's token, validation, enqueue."""
    from bot.access import identity, may_submit
    from bot.errors import BotInputError, NotACheckpoint, Superseded
    from bot.pairing import expand, verify_ct
    from bot.recipes import custom_tag
    from registry.errors import HubAuthError, HubError, HubRepoNotFoundError, HubRevisionNotFoundError, RecipeError
    from registry.hub import HubClient

    custom = None
    if body.get("recipe") is not None:
        try:
            custom = recipe_request(body["recipe"])
        except RecipeError as exc:
            return 400, {"error": " ".join(str(exc).split()), "reasons": []}
    repo = body.get("ct_repo")
    if not isinstance(repo, str) or repo.count("/") != 1:
        return 422, {"error": "ct_repo must be OWNER/NAME", "reasons": []}
    revision = body.get("revision") or None
    language = body.get("language") or None
    if not (revision is None or isinstance(revision, str)) or not (language is None or isinstance(language, str)):
        return 422, {"error": "revision and language must be strings", "reasons": []}
    user_hub = HubClient(endpoint=config.endpoint, token=token, cache_dir=config.cache_dir)
    try:
        info = user_hub.model_info(repo, revision=revision)
        who = identity(user_hub)
        refusal = may_submit(who, repo)
    except (HubRepoNotFoundError, HubRevisionNotFoundError):
        return 404, {"error": f"{repo}{'@' + revision if revision else ''} does not exist or this token cannot read it"}
    except HubAuthError:
        return 401, {"error": "the Hub refused this token"}
    if refusal is not None:
        return 403, {"error": refusal}
    sha = str(info.sha)
    try:
        ct = verify_ct(config, hub, repo=repo, sha=sha, language=language)
        expand(config, hub, ct, custom=custom)
    except RecipeError as exc:
        return 400, {"error": public_text(" ".join(str(exc).split()), roots=(config.data,)), "reasons": []}
    except NotACheckpoint as exc:
        return 422, {"error": f'{exc}; pass "language" to submit it anyway', "reasons": []}
    except Superseded as exc:
        return 422, {"error": str(exc), "reasons": []}
    except BotInputError as exc:
        roots = (config.data,)
        reasons = [public_text(str(r), roots=roots) for r in getattr(exc, "reasons", None) or []]
        return 422, {"error": public_text(str(exc), roots=roots), "reasons": reasons}
    except HubError as exc:
        return 503, {"error": f"the Hub could not be asked: {public_text(str(exc), roots=(config.data,))}"}
    job, _ = queue.enqueue(
        key=trigger_key(repo, sha, recipe=custom_tag(custom) if custom else None), kind="pair", ct_repo=repo,
        ct_sha=sha, language=ct.language, spec=JobSpec(custom_recipe=custom), submitted_by=user or who.name,
    )  # fmt: skip
    return 202, {"jobs": [job.public(endpoint=hub.endpoint, base_url=base_url)]}


def create_app(
    config: BotConfig,
    queue: JobQueue,
    *,
    secret: str | None,
    hub: HubClient | None = None,
    rate_limit: RateLimiter | None = None,
) -> Starlette:
    """The ASGI app. `secret` None accepts unsigned deliveries (never in `registry bot serve`)."""
    limiter = rate_limit or RateLimiter()
    bot_hub: list[HubClient | None] = [hub]

    def get_hub() -> HubClient:
        client = bot_hub[0]
        if client is None:
            client = bot_hub[0] = config.hub()
        return client

    async def webhook(request: Request) -> JSONResponse:
        if secret is not None:
            given = request.headers.get("x-webhook-secret")
            if given is None:
                return _error(401, "missing X-Webhook-Secret")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                return _error(403, "wrong X-Webhook-Secret")
        body = await _read_body(request)
        if body is None:
            return _error(413, f"payload larger than {MAX_BODY} bytes")
        status, out = await run_in_threadpool(webhook_decision, config, queue, body)
        return JSONResponse(out, status_code=status)

    async def healthz(request: Request) -> JSONResponse:
        counts = await run_in_threadpool(queue.counts)
        running = sum(counts.get(s, 0) for s in ("running", "merged", "evaluated"))
        return JSONResponse({"ok": True, "queued": counts.get("queued", 0), "running": running})

    def user_of(token: str) -> str:
        """The token's user, asked of the Hub (`whoami`)."""
        from registry.hub import HubClient

        return HubClient(endpoint=config.endpoint, token=token, cache_dir=config.cache_dir).whoami()

    async def token_user(request: Request, missing: str) -> str | JSONResponse:
        """The bearer token's user, or the response that refuses the request (`missing`: no token)."""
        from registry.errors import HubAuthError, HubError

        token = _bearer(request)
        if not token:
            return _error(401, missing)
        try:
            return await run_in_threadpool(user_of, token)
        except HubAuthError:
            return _error(401, "the Hub does not know this token")
        except HubError as exc:
            return _error(503, f"the Hub could not check the token: {public_text(str(exc), roots=(config.data,))}")

    def reader(request: Request) -> ReadCheck:
        """The caller's read access, asked of the Hub with its own token (none: anonymous)."""
        return ReadCheck(endpoint=config.endpoint, token=_bearer(request) or None, cache_dir=config.cache_dir)

    def visible(jobs: list[Job], check: ReadCheck) -> list[Job]:
        return [job for job in jobs if check.all_readable(job.input_repos())]

    def shown(job: Job, request: Request) -> dict[str, Any]:
        return job.public(endpoint=get_hub().endpoint, base_url=str(request.base_url))

    async def list_jobs(request: Request) -> JSONResponse:
        state = request.query_params.get("state") or None
        limit_raw = request.query_params.get("limit")
        limit = min(int(limit_raw), 1000) if limit_raw and limit_raw.isdigit() else 200
        mine = request.query_params.get("mine", "").lower() in ("1", "true", "yes")
        submitter = None
        if mine:
            found = await token_user(
                request, "mine=true lists the jobs of a token's user: send Authorization: Bearer <token>"
            )
            if isinstance(found, JSONResponse):
                return found
            submitter = found
        jobs = await run_in_threadpool(queue.list, state=state, limit=limit, submitted_by=submitter)
        readable = await run_in_threadpool(visible, jobs, reader(request))
        return JSONResponse([shown(job, request) for job in readable])

    async def get_job(request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(queue.get, job_id)
        if job is None or not await run_in_threadpool(visible, [job], reader(request)):
            return _error(404, f"no job {job_id!r} that this caller can read (send Authorization: Bearer <token>)")
        return JSONResponse(shown(job, request))

    async def post_job(request: Request) -> JSONResponse:
        user = await token_user(request, "send a Hub token: Authorization: Bearer <token>")
        if isinstance(user, JSONResponse):
            return user
        token = _bearer(request)
        if not limiter.allow(user):
            return _error(
                429, f"too many submissions from {user}; at most {limiter.limit} per {limiter.window_s:.0f} s"
            )
        raw = await _read_body(request)
        if raw is None:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, "the body is not JSON")
        except RecursionError:
            return _error(400, "the body's JSON is nested too deeply")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        status, out = await run_in_threadpool(
            lambda: submit_job(config, queue, get_hub(), token, body, user=user, base_url=str(request.base_url))
        )
        return JSONResponse(out, status_code=status)

    routes = [
        Route("/webhooks/hub", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs", post_job, methods=["POST"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
    ]
    return Starlette(routes=routes)
