"""The bot's HTTP API as the Space uses it (docs/bot.md): submit a CT, list and read jobs.

The Space never imports `bot`: it talks to the bot process over HTTP only, at the URL given with
`registry space --bot URL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from space.errors import BotRequestError, BotUnavailableError

JOB_COLUMNS = (
    "id",
    "state",
    "kind",
    "language",
    "ct_repo",
    "sft_repo",
    "output_repo",
    "error",
    "attempts",
    "updated_at",
)

MY_JOB_COLUMNS = ("job", "state", "language", "CT", "merged model", "discussion", "updated")


@dataclass(frozen=True)
class Submitted:
    """The jobs the bot created (or already had) for a submission."""

    jobs: tuple[dict[str, Any], ...]

    @property
    def ids(self) -> list[str]:
        return [str(job["id"]) for job in self.jobs]


class BotClient:
    """A client of one bot.

    Args:
        url: the bot's base URL (e.g. http://127.0.0.1:8792); None means no bot is configured.
        timeout: seconds per request.
    """

    def __init__(self, url: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        if not self.url:
            raise BotUnavailableError(
                "no bot is configured for this Space: start one (`registry bot serve`) and pass "
                "`registry space --bot URL` (or set MERGELING_BOT_URL)",
                url=None,
            )
        try:
            return httpx.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise BotUnavailableError(
                f"the bot at {self.url} is unreachable ({type(exc).__name__}: {exc}); jobs cannot be submitted or "
                "listed until it is back; everything else in the Space works",
                url=self.url,
            ) from exc

    def health(self) -> dict[str, Any]:
        """`GET /healthz`."""
        return dict(self._json(self._request("GET", "/healthz"), what="read the bot's health"))

    def submit(
        self, ct_repo: str, *, token: str | None, language: str | None = None, recipe: str | None = None
    ) -> Submitted:
        """`POST /jobs`: enqueue the merges of a CT repo.

        Args:
            ct_repo: the CT repo.
            token: the visitor's Hub token (the bot acts as them).
            language: the CT's language when its card has none.
            recipe: a full recipe (YAML) to merge with, sent as `{"recipe": {"text": ...}}`; the bot
                validates it with the engine's `Recipe` and puts the job's pinned CT, SFT and base in
                place of its references. None: the bot's own recipe for the language.

        Raises:
            BotUnavailableError: no bot, or it cannot be reached.
            BotRequestError: the bot refused (401, 404, 422 with every reason, 429), its message kept.
        """
        body: dict[str, Any] = {"ct_repo": ct_repo}
        if language:
            body["language"] = language
        if recipe is not None:
            body["recipe"] = {"text": recipe}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = self._json(self._request("POST", "/jobs", json=body, headers=headers), what=f"submit {ct_repo}")
        return Submitted(jobs=tuple(data.get("jobs") or ()))

    def jobs(self, *, limit: int = 50, token: str | None = None, mine: bool = False) -> list[dict[str, Any]]:
        """`GET /jobs`: the newest jobs first, those the caller can read.

        Args:
            limit: at most this many.
            token: the caller's Hub token (None: anonymous, public jobs only).
            mine: only the jobs the token's user submitted (`?mine=true`; needs `token`).
        """
        params: dict[str, Any] = {"limit": limit}
        if mine:
            params["mine"] = "true"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = self._json(self._request("GET", "/jobs", params=params, headers=headers), what="list jobs")
        return list(data)

    def job(self, job_id: str) -> dict[str, Any]:
        """`GET /jobs/{id}`.

        Raises:
            BotRequestError: no such job (404).
        """
        from urllib.parse import quote

        return dict(self._json(self._request("GET", f"/jobs/{quote(job_id, safe='')}"), what=f"read job {job_id}"))

    def _json(self, response: Any, *, what: str) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            reasons = tuple(data.get("reasons") or ()) if isinstance(data, dict) else ()
            message = f"the bot could not {what}: {error or response.reason_phrase} (HTTP {response.status_code})"
            if reasons:
                message += ": " + "; ".join(str(r) for r in reasons)
            raise BotRequestError(message, status=response.status_code, reasons=reasons)
        if data is None:
            raise BotRequestError(
                f"the bot could not {what}: its answer is not JSON (HTTP {response.status_code}); is {self.url} the bot?",
                status=response.status_code,
                reasons=(),
            )
        return data


def job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """Jobs as table rows in `JOB_COLUMNS` order."""
    return [[job.get(column) for column in JOB_COLUMNS] for job in jobs]
