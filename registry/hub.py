"""The one place that talks to a Hugging Face Hub (huggingface.co or an embedded hub).

`HubClient(endpoint=..., token=...)` wraps `huggingface_hub.HfApi` with the endpoint and token
injected, and turns every `huggingface_hub` failure into a `registry.errors.Hub*` error whose
message says what failed and what to do (the mapping is `registry.hub_errors.convert_error`).
Results are `huggingface_hub`'s typed dataclasses
(`ModelInfo`, `DatasetInfo`, `Discussion`, ...), or plain values (commit shas, paths).

Everything goes through `HfApi` methods, which take the endpoint explicitly; module-level helpers
(`hf_hub_download`, `ModelCard.load`) read `HF_ENDPOINT` once at import and are avoided here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from registry.errors import HubConflictError, HubError, HubRepoNotFoundError
from registry.hub_errors import convert_error
from registry.hub_transport import probe, xet_off

if TYPE_CHECKING:
    from huggingface_hub import DatasetInfo, Discussion, ModelInfo, WebhookInfo

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINT = "https://huggingface.co"
_WEB_PREFIX = {"model": "", "dataset": "/datasets", "space": "/spaces"}
# Sent on every request to a hub without Xet, so it may answer "lfs" at preupload (see
# registry.localhub.app.client_disabled_xet).
XET_DISABLED_HEADER = "X-Mergeling-Xet"


def is_public_hub(endpoint: str) -> bool:
    """Whether `endpoint` is huggingface.co (or hf.co), which speaks Xet."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return host in ("huggingface.co", "hf.co") or host.endswith((".huggingface.co", ".hf.co"))


def default_endpoint() -> str:
    """`HF_ENDPOINT` when set, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or PUBLIC_ENDPOINT).rstrip("/")


class HubClient:
    """A Hub client with its endpoint and token injected.

    Args:
        endpoint: the Hub URL; None means `HF_ENDPOINT` or huggingface.co.
        token: an access token; None means `HF_TOKEN` or the stored login, as in huggingface_hub.
        cache_dir: where downloads are cached (default: the huggingface_hub cache).
        fail_fast: before the first call, check within `probe_timeout` seconds that the endpoint
            answers at all, and raise `HubUnavailableError` if not. Some huggingface_hub calls
            (file listings, uploads) retry a refused connection five times with backoff, about
            25 s, which is right for a bot but not for someone at a prompt (the CLI sets this).
        probe_timeout: seconds for that check.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        cache_dir: Path | None = None,
        fail_fast: bool = False,
        probe_timeout: float = 3.0,
    ) -> None:
        from huggingface_hub import HfApi

        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        self.cache_dir = cache_dir
        self.fail_fast = fail_fast
        self.probe_timeout = probe_timeout
        self._reachable = False
        headers: dict[str, str] = {}
        if not is_public_hub(self.endpoint):
            # The header tells the server this client uploads without Xet (see `_uploads`), so
            # it may answer "lfs" for large files; without it the server answers "regular"
            # (inline base64), which is safe but costly.
            headers[XET_DISABLED_HEADER] = "disabled"
        self.api = HfApi(endpoint=self.endpoint, token=token, headers=headers, library_name="mergeling")

    def check_reachable(self, *, what: str = "reach the hub", repo_id: str | None = None) -> None:
        """Raise `HubUnavailableError` unless the endpoint answers within `probe_timeout` seconds.

        Any HTTP answer counts (even an error status); once it has answered, later calls skip it.

        Raises:
            HubUnavailableError: connection refused or timed out, bad URL, or HF_HUB_OFFLINE=1.
        """
        if not self._reachable:
            probe(self.endpoint, timeout=self.probe_timeout, what=what, repo_id=repo_id)
            self._reachable = True

    @contextmanager
    def _uploads(self) -> Iterator[None]:
        """Around an upload: Xet off while it runs when the hub has no Xet storage (see `xet_off`)."""
        if is_public_hub(self.endpoint):
            yield
        else:
            with xet_off():
                yield

    # -- error conversion ---------------------------------------------------------------------
    @contextmanager
    def _errors(
        self, what: str, *, repo_id: str | None = None, revision: str | None = None, path: str | None = None
    ) -> Iterator[None]:
        try:
            if self.fail_fast:
                self.check_reachable(what=what, repo_id=repo_id)
            yield
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 (converted below, or re-raised unchanged)
            converted = convert_error(
                exc, what=what, endpoint=self.endpoint, repo_id=repo_id, revision=revision, path=path
            )
            if converted is None:
                raise
            raise converted from exc

    # -- identity and repos -------------------------------------------------------------------
    def whoami(self) -> str:
        """The username of the token.

        Raises:
            HubAuthError: no token, or the hub does not know it.
        """
        with self._errors("whoami"):
            return str(self.api.whoami()["name"])

    def create_repo(
        self, repo_id: str, *, repo_type: str = "model", private: bool = False, exist_ok: bool = False
    ) -> str:
        """Create a repo; return its web URL.

        Raises:
            HubConflictError: it exists and `exist_ok` is False.
            HubAuthError: the token may not write to that namespace.
        """
        from huggingface_hub.errors import HfHubHTTPError

        url = f"{self.endpoint}{_WEB_PREFIX[repo_type]}/{repo_id}"
        with self._errors("create repo", repo_id=repo_id):
            try:
                # exist_ok is handled here: huggingface_hub's own handling of a 403 builds a
                # RepoUrl against constants.ENDPOINT and fails on any other endpoint.
                return str(self.api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=False))
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if exist_ok and status == 409:
                    return url
                if exist_ok and status in (401, 402, 403) and self.repo_exists(repo_id, repo_type=repo_type):
                    return url
                raise

    def delete_repo(self, repo_id: str, *, repo_type: str = "model", missing_ok: bool = False) -> None:
        """Delete a repo (and all its revisions)."""
        with self._errors("delete repo", repo_id=repo_id):
            self.api.delete_repo(repo_id, repo_type=repo_type, missing_ok=missing_ok)

    def repo_info(
        self, repo_id: str, *, repo_type: str = "model", revision: str | None = None, files_metadata: bool = False
    ) -> ModelInfo | DatasetInfo | Any:
        """The repo's info at `revision` (default branch when None): sha, siblings, tags, card data."""
        with self._errors("read repo info", repo_id=repo_id, revision=revision):
            return self.api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=files_metadata)

    def model_info(self, repo_id: str, *, revision: str | None = None, files_metadata: bool = False) -> ModelInfo:
        """`repo_info` of a model repo."""
        with self._errors("read repo info", repo_id=repo_id, revision=revision):
            return self.api.model_info(repo_id, revision=revision, files_metadata=files_metadata)

    def safetensors_metadata(self, repo_id: str, *, revision: str | None = None) -> Any:
        """The safetensors headers of a model repo, read with HTTP range requests (no weights).

        Returns:
            huggingface_hub's `SafetensorsRepoMetadata` (`weight_map`, `files_metadata`).

        Raises:
            huggingface_hub's `NotASafetensorsRepoError` / `SafetensorsParsingError` unchanged (the
            caller decides what a repo without readable headers means); Hub errors as ours.
        """
        with self._errors("read safetensors headers", repo_id=repo_id, revision=revision):
            return self.api.get_safetensors_metadata(repo_id, revision=revision)

    def head_sha(self, repo_id: str, *, repo_type: str = "model", revision: str | None = None) -> str | None:
        """The commit sha `revision` (default: main) points to; None for a repo without commits."""
        return self.repo_info(repo_id, repo_type=repo_type, revision=revision).sha

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        """Whether the repo exists and this token may see it (a private repo of others reads as absent)."""
        try:
            self.repo_info(repo_id, repo_type=repo_type)
        except HubRepoNotFoundError:
            return False
        return True

    def list_models(
        self,
        *,
        filter: str | Sequence[str] | None = None,  # noqa: A002 (huggingface_hub's name)
        author: str | None = None,
        search: str | None = None,
        card_data: bool = False,
        limit: int | None = None,
    ) -> list[ModelInfo]:
        """Models whose tags include every `filter` value, by `author`, with `search` in the id."""
        with self._errors("list models"):
            return list(
                self.api.list_models(filter=filter, author=author, search=search, cardData=card_data, limit=limit)
            )

    def list_datasets(
        self,
        *,
        filter: str | Sequence[str] | None = None,
        author: str | None = None,
        search: str | None = None,  # noqa: A002
    ) -> list[DatasetInfo]:
        """Dataset repos, filtered as `list_models`."""
        with self._errors("list datasets"):
            return list(self.api.list_datasets(filter=filter, author=author, search=search))

    # -- files --------------------------------------------------------------------------------
    def list_files(self, repo_id: str, *, repo_type: str = "model", revision: str | None = None) -> list[str]:
        """Every file path in the repo at `revision`."""
        with self._errors("list files", repo_id=repo_id, revision=revision):
            return list(self.api.list_repo_files(repo_id, repo_type=repo_type, revision=revision))

    def file_exists(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str | None = None) -> bool:
        """Whether `path` exists in the repo at `revision` (default branch when None).

        Raises:
            HubRepoNotFoundError: the repo does not exist (or is private to someone else).
        """
        with self._errors("check file", repo_id=repo_id, revision=revision, path=path):
            return bool(self.api.file_exists(repo_id, path, repo_type=repo_type, revision=revision))

    def download_file(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str | None = None) -> Path:
        """Download one file into the cache; return its local path.

        Raises:
            HubEntryNotFoundError: no such file at that revision.
        """
        with self._errors("download", repo_id=repo_id, revision=revision, path=path):
            return Path(
                self.api.hf_hub_download(
                    repo_id, path, repo_type=repo_type, revision=revision, cache_dir=self.cache_dir
                )
            )

    def read_file(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str | None = None) -> bytes:
        """The bytes of one (small) file."""
        return self.download_file(repo_id, path, repo_type=repo_type, revision=revision).read_bytes()

    def snapshot(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        revision: str | None = None,
        allow_patterns: Sequence[str] | None = None,
        local_dir: Path | None = None,
    ) -> Path:
        """Download a repo (or the files matching `allow_patterns`); return the local folder."""
        with self._errors("download snapshot", repo_id=repo_id, revision=revision):
            return Path(
                self.api.snapshot_download(
                    repo_id,
                    repo_type=repo_type,
                    revision=revision,
                    allow_patterns=list(allow_patterns) if allow_patterns else None,
                    cache_dir=self.cache_dir,
                    local_dir=local_dir,
                )
            )

    # -- writes -------------------------------------------------------------------------------
    def commit_files(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        message: str,
        add: Mapping[str, bytes | Path],
        delete: Sequence[str] = (),
        parent_commit: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """One commit adding `add` (path in repo -> bytes or local file) and deleting `delete`.

        Returns:
            The new commit sha.

        Raises:
            HubConflictError: `parent_commit` is no longer the head (someone committed in between).
            HubEntryNotFoundError: a path in `delete` does not exist.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=_source(v)) for p, v in add.items()]
        ops += [CommitOperationDelete(path_in_repo=p) for p in delete]
        with self._errors("commit", repo_id=repo_id, revision=revision), self._uploads():
            info = self.api.create_commit(
                repo_id,
                operations=ops,
                commit_message=message,
                repo_type=repo_type,
                revision=revision,
                parent_commit=parent_commit,
                create_pr=create_pr,
            )
        if parent_commit is not None and info.oid != parent_commit and _all_unchanged(ops):
            # huggingface_hub drops additions whose content equals the file at the branch HEAD
            # (not at parent_commit) and, when nothing is left, returns the head without
            # committing: the parent check never reaches the server. A stale writer would then
            # "succeed" without its read being current, so report the conflict ourselves.
            raise HubConflictError(
                f"Cannot commit on {repo_id}: the branch moved past parent commit {parent_commit} (now {info.oid}) "
                "and already holds these files. Re-read and retry",
                repo_id=repo_id,
                status=412,
                endpoint=self.endpoint,
            )
        return str(info.oid)

    def upload_folder(
        self,
        folder: Path,
        repo_id: str,
        *,
        repo_type: str = "model",
        message: str = "Upload folder",
        path_in_repo: str | None = None,
        revision: str | None = None,
    ) -> str:
        """Upload a local folder in one commit; return the commit sha."""
        with self._errors("upload folder", repo_id=repo_id, revision=revision), self._uploads():
            info = self.api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type=repo_type,
                commit_message=message,
                path_in_repo=path_in_repo,
                revision=revision,
            )
        return str(info.oid)

    # -- discussions and webhooks ------------------------------------------------------------
    def create_discussion(self, repo_id: str, *, title: str, description: str = "", repo_type: str = "model") -> int:
        """Open a discussion; return its number."""
        with self._errors("create discussion", repo_id=repo_id):
            return self.api.create_discussion(repo_id, title=title, description=description, repo_type=repo_type).num

    def comment_discussion(self, repo_id: str, num: int, comment: str, *, repo_type: str = "model") -> None:
        """Add `comment` to discussion (or pull request) number `num`."""
        with self._errors("comment on discussion", repo_id=repo_id):
            self.api.comment_discussion(repo_id, num, comment, repo_type=repo_type)

    def list_discussions(
        self, repo_id: str, *, repo_type: str = "model", author: str | None = None
    ) -> list[Discussion]:
        """The repo's discussions and pull requests, optionally only those opened by `author`."""
        with self._errors("list discussions", repo_id=repo_id):
            return list(self.api.get_repo_discussions(repo_id, repo_type=repo_type, author=author))

    def create_webhook(
        self,
        *,
        url: str,
        watched: Sequence[Mapping[str, str]],
        domains: Sequence[str] = ("repo", "discussion"),
        secret: str | None = None,
    ) -> WebhookInfo:
        """Register a webhook on `watched` items ({"type": "user"|"org"|"model"|..., "name": ...})."""
        from huggingface_hub import WebhookWatchedItem

        # huggingface_hub types `type` and `domains` as Literals; the server checks the values.
        items: list[Any] = [WebhookWatchedItem(type=cast(Any, w["type"]), name=w["name"]) for w in watched]
        with self._errors("create webhook"):
            return self.api.create_webhook(url=url, watched=items, domains=cast(Any, list(domains)), secret=secret)

    def list_webhooks(self) -> list[WebhookInfo]:
        """The token owner's webhooks."""
        with self._errors("list webhooks"):
            return list(self.api.list_webhooks())

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete one of the token owner's webhooks."""
        with self._errors("delete webhook"):
            self.api.delete_webhook(webhook_id)

    # -- refs ----------------------------------------------------------------------------------
    def create_branch(
        self,
        repo_id: str,
        branch: str,
        *,
        repo_type: str = "model",
        revision: str | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create `branch` at `revision` (default: the head of main)."""
        with self._errors("create branch", repo_id=repo_id, revision=revision):
            self.api.create_branch(repo_id, branch=branch, revision=revision, repo_type=repo_type, exist_ok=exist_ok)

    def create_tag(
        self,
        repo_id: str,
        tag: str,
        *,
        repo_type: str = "model",
        revision: str | None = None,
        message: str | None = None,
    ) -> None:
        """Tag `revision` (default: the head of main)."""
        with self._errors("create tag", repo_id=repo_id, revision=revision):
            self.api.create_tag(repo_id, tag=tag, tag_message=message, revision=revision, repo_type=repo_type)


def _all_unchanged(ops: Sequence[Any]) -> bool:
    """Whether the client skipped every operation as unchanged (its own no-op test)."""
    from huggingface_hub import CommitOperationAdd

    return bool(ops) and all(
        isinstance(op, CommitOperationAdd) and op._remote_oid is not None and op._remote_oid == op._local_oid  # noqa: SLF001
        for op in ops
    )


def _source(value: bytes | Path) -> bytes | str:
    return str(value) if isinstance(value, Path) else value
