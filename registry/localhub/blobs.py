"""Files on disk: crash-safe writes (temp file, fsync, rename) and the content-addressed blob store.

Split out of `registry.localhub.storage`, which re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from registry.localhub.names import InvalidInput, Unprocessable

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def atomic_write(path: Path, data: bytes, *, create_dirs: bool = True) -> None:
    """Write `data` to `path` via temp file + fsync + rename, then fsync the folder.

    `create_dirs=False` for files inside a repo: a repo deleted meanwhile must stay deleted
    (FileNotFoundError), not come back as a folder holding one file.
    """
    if create_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, *, create_dirs: bool = True) -> None:
    """`atomic_write` of a JSON document."""
    atomic_write(path, json.dumps(obj, sort_keys=True, indent=1).encode(), create_dirs=create_dirs)


def read_json(path: Path) -> Any:
    """Read a JSON document written by `atomic_write_json`."""
    return json.loads(path.read_bytes())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Content-addressed file contents, named by sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidInput(f"Invalid sha256 {sha256!r}: expected 64 lowercase hex digits")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def put_bytes(self, data: bytes) -> str:
        """Store `data`; return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.exists(sha):
            atomic_write(self.path(sha), data)
        return sha

    def put_stream(self, chunks: Iterator[bytes], *, expected_sha256: str | None = None) -> tuple[str, int]:
        """Stream chunks into the store, checking the sha256 when given.

        Returns:
            (sha256, size) of what was stored.

        Raises:
            StorageError: 422 when the content does not hash to `expected_sha256` (nothing kept).
        """
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            sha = digest.hexdigest()
            if expected_sha256 is not None and sha != expected_sha256:
                raise Unprocessable(
                    f"Uploaded content hashes to {sha}, not the announced oid {expected_sha256}; re-upload the file",
                )
            target = self.path(sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            return sha, size
        finally:
            Path(tmp).unlink(missing_ok=True)

    def adopt(self, tmp: Path, sha256: str) -> None:
        """Move a fully written, hashed temp file of `self.tmp` into the store as `sha256`."""
        target = self.path(sha256)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")


__all__ = ["BlobStore", "atomic_write", "atomic_write_json", "read_json"]
