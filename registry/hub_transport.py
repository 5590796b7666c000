"""What `HubClient` needs beyond `HfApi`: a quick reachability probe, and Xet off during uploads.

- `probe`: some huggingface_hub calls (file listings, uploads) retry a refused connection five
  times with backoff, about 25 s, which is right for a bot but not for someone at a prompt. One
  HEAD request with a short timeout tells "nothing there" apart from any HTTP answer first.
- `xet_off`: huggingface_hub >= 1.20 uploads every file the server marks "lfs" through hf_xet
  whenever hf_xet is importable, and no server answer can stop it; on a hub without Xet storage
  (the embedded hub) the upload then fails on the missing xet-write-token route. Its only switch
  is the process-wide constant `HF_HUB_DISABLE_XET`, read at call time, so it is set while such an
  upload runs, counted under a lock (overlapping uploads in threads restore it once, when the
  last ends). An upload to huggingface.co that overlaps one takes the LFS path, which it accepts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from registry.errors import HubUnavailableError


def probe(endpoint: str, *, timeout: float, what: str = "reach the hub", repo_id: str | None = None) -> None:
    """Raise `HubUnavailableError` unless `endpoint` gives any HTTP answer within `timeout` seconds.

    Args:
        endpoint: the Hub URL.
        timeout: seconds to wait for the connection and the answer.
        what, repo_id: the action the caller was about to take, for the message.

    Raises:
        HubUnavailableError: connection refused or timed out, bad URL, or HF_HUB_OFFLINE=1.
    """
    from huggingface_hub import constants, get_session

    try:
        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("offline mode (HF_HUB_OFFLINE=1)")
        get_session().head(f"{endpoint}/", timeout=timeout)
    except Exception as exc:  # noqa: BLE001 (every transport failure means "unreachable")
        raise HubUnavailableError(
            f"Cannot {what}{f' {repo_id}' if repo_id else ''}: the hub at {endpoint} cannot be reached "
            f"({type(exc).__name__}: {str(exc) or 'no answer'}; checked within {timeout:g} s). "
            "Is the server running (`registry hub serve`) and is --endpoint / HF_ENDPOINT right?",
            repo_id=repo_id,
            endpoint=endpoint,
        ) from exc


class _XetSwitch:
    """`HF_HUB_DISABLE_XET` on while any upload to a hub without Xet runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads = 0
        self.saved = False

    def enter(self) -> None:
        from huggingface_hub import constants

        with self.lock:
            if self.uploads == 0:
                self.saved = constants.HF_HUB_DISABLE_XET
                constants.HF_HUB_DISABLE_XET = True
            self.uploads += 1

    def leave(self) -> None:
        from huggingface_hub import constants

        with self.lock:
            self.uploads -= 1
            if self.uploads == 0:
                constants.HF_HUB_DISABLE_XET = self.saved


# huggingface_hub's switch is process-wide, so the object that guards it is too.
_XET_SWITCH = _XetSwitch()


@contextmanager
def xet_off() -> Iterator[None]:
    """`HF_HUB_DISABLE_XET` is True inside (and restored when the last overlapping block leaves)."""
    _XET_SWITCH.enter()
    try:
        yield
    finally:
        _XET_SWITCH.leave()
