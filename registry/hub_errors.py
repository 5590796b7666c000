"""Turn huggingface_hub (and transport) exceptions into `registry.errors.Hub*` errors.

Messages say what failed, on which endpoint and repo, and what to do next. Used by
`registry.hub.HubClient`; kept apart so the mapping can be tested on the client's own exceptions.
"""

from __future__ import annotations

from registry.errors import (
    HubAuthError,
    HubBadRequestError,
    HubConflictError,
    HubEntryNotFoundError,
    HubError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubUnavailableError,
)


def convert_error(
    exc: Exception,
    *,
    what: str,
    endpoint: str,
    repo_id: str | None = None,
    revision: str | None = None,
    path: str | None = None,
    write: bool | None = None,
) -> HubError | None:
    """Map a huggingface_hub (or transport) exception to our error, or None to let it through.

    Args:
        exc: the exception raised by huggingface_hub.
        what: the action, for the message ("commit", "download").
        endpoint: the hub URL, named in messages.
        repo_id, revision, path: what was asked for.
        write: whether the action writes (an auth failure then asks for a write token); None
            infers it from `what` ("commit", "create repo", "upload folder", ...).
    """
    from huggingface_hub import errors as hf

    status: int | None = getattr(getattr(exc, "response", None), "status_code", None)
    server = _server_message(exc)
    where = f" on {endpoint}"
    if isinstance(exc, hf.LocalTokenNotFoundError):
        # Raised before any request (whoami needs a token); an OSError, so it would otherwise
        # slip past callers that catch HubAuthError.
        return HubAuthError(
            f"Cannot {what}{f' on {repo_id}' if repo_id else ''}: no token (none given, no HF_TOKEN, no stored login). "
            "Pass one with --token or HF_TOKEN (on an embedded hub create one with "
            "`registry hub token create USER --data DIR --write`)",
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    if isinstance(exc, hf.HFValidationError):
        # huggingface_hub checks repo ids before any request; a ValueError with a traceback otherwise.
        return HubBadRequestError(f"Cannot {what}: {exc}", repo_id=repo_id, status=None, endpoint=endpoint)
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubRevisionNotFoundError(
            f"Cannot {what}: revision {revision!r} not found in {repo_id}{where}; use a branch, tag or commit sha that exists",
            revision=revision,
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError) or (
        isinstance(exc, hf.EntryNotFoundError) and not isinstance(exc, hf.LocalEntryNotFoundError)
    ):
        return HubEntryNotFoundError(
            f"Cannot {what}: {path or 'the file'!r} does not exist in {repo_id}"
            f"{f' at {revision}' if revision else ''}{where}; list the files with `list_repo_files`",
            path=path,
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubRepoNotFoundError(
            f"Cannot {what}: repository {repo_id} not found{where}. Check the id and repo type; a private repo "
            "needs a token that can read it (--token or HF_TOKEN)",
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    if isinstance(exc, hf.HfHubHTTPError):
        if status in (401, 403):
            return HubAuthError(
                _auth_message(what, repo_id, status, server, writes=_is_write(what, write)),
                repo_id=repo_id,
                status=status,
                endpoint=endpoint,
            )
        if status == 404 and not _answers_like_a_hub(getattr(exc, "response", None)):
            return HubUnavailableError(
                f"Cannot {what}{f' on {repo_id}' if repo_id else ''}: {endpoint} answered 404 without a Hub's error "
                "details, so it is not a Hugging Face Hub (or not its root URL). Check --endpoint / HF_ENDPOINT "
                "(`registry hub serve` prints an embedded hub's URL)",
                repo_id=repo_id,
                status=status,
                endpoint=endpoint,
            )
        if status in (409, 412):
            return HubConflictError(
                f"Cannot {what} on {repo_id}: {server}. Someone changed it in between: re-read and retry",
                repo_id=repo_id,
                status=status,
                endpoint=endpoint,
            )
        return HubError(
            f"Cannot {what}{f' on {repo_id}' if repo_id else ''}: HTTP {status}: {server}",
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    if (
        isinstance(exc, hf.OfflineModeIsEnabled)
        or isinstance(exc, hf.LocalEntryNotFoundError)
        or _is_transport_error(exc)
    ):
        return HubUnavailableError(
            f"Cannot {what}{f' {repo_id}' if repo_id else ''}: the hub at {endpoint} cannot be reached ({type(exc).__name__}). "
            "Is the server running (`registry hub serve`) and is --endpoint / HF_ENDPOINT right?",
            repo_id=repo_id,
            status=status,
            endpoint=endpoint,
        )
    return None


# Actions (HubClient's `what`) that change something on the Hub; the rest only read.
_WRITE_ACTIONS = ("create", "delete", "commit", "upload", "comment", "merge", "update", "push")


def _is_write(what: str, write: bool | None) -> bool:
    return write if write is not None else what.split(" ", 1)[0] in _WRITE_ACTIONS


def _auth_message(what: str, repo_id: str | None, status: int, server: str, *, writes: bool) -> str:
    """A 401 means the token is missing or unknown; a 403 that it lacks a right: say which token helps."""
    on = f" on {repo_id}" if repo_id else ""
    problem = "invalid or missing token" if status == 401 else "permission denied"
    if writes:
        fix = "Pass a write token for that namespace"
        create = "`registry hub token create USER --data DIR --write`"
    elif status == 401:
        fix = "Pass a valid token"
        create = "`registry hub token create USER --data DIR`"
    else:
        fix = f"Pass a token that may read {repo_id or 'it'}"
        create = "`registry hub token create USER --data DIR` (with --org for an organisation's repos)"
    return f"Cannot {what}{on}: {problem} ({server}). {fix} (--token or HF_TOKEN; on an embedded hub create one with {create})"


def _answers_like_a_hub(response: object) -> bool:
    """A Hub's errors carry `X-Error-Code` / `X-Error-Message` headers or a JSON `{"error": ...}` body;
    a 404 from some other web server (a wrong port, a proxy's root) has neither."""
    if response is None:
        return True
    headers = getattr(response, "headers", {})
    if headers.get("X-Error-Code") or headers.get("X-Error-Message"):
        return True
    if "json" not in headers.get("Content-Type", ""):
        return False
    try:
        body = response.json()  # type: ignore[attr-defined]
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body


def _server_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        message = response.headers.get("X-Error-Message")
        if message:
            return str(message)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_transport_error(exc: Exception) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "ConnectionError", "TimeoutException"})
