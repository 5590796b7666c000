"""Streaming reader of NDJSON commit bodies: memory stays flat whatever the size of inline files.

A `file` line carries its bytes as one base64 JSON string (`"content": "..."`, hundreds of MB for
big regular uploads). Short lines are parsed whole; in a line over `SPOOL_OVER` bytes with inline
content, the `content` string is decoded on the fly into a spool file (sha256 computed while
writing) and the rest of the line, which is small, is parsed as JSON with an empty `content`. So
memory holds at most one line of `LINE_LIMIT` bytes, whatever the number of files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.localhub.names import InvalidInput, TooLarge

LINE_LIMIT = 256 * 1024  # the longest line parsed whole (a header with a long description)
SPOOL_OVER = 8 * 1024  # a line longer than this with inline content has it spooled to disk
_CONTENT_KEY = re.compile(rb'"content"\s*:\s*"')
_B64 = re.compile(rb"[A-Za-z0-9+/=]*")


@dataclass(frozen=True)
class Spooled:
    """Decoded file content waiting in a temp file of the blob store."""

    path: Path
    sha256: str
    size: int

    def git_oid(self) -> str:
        digest = hashlib.sha1(b"blob %d\0" % self.size)
        with self.path.open("rb") as fh:
            while piece := fh.read(1 << 20):
                digest.update(piece)
        return digest.hexdigest()


def _bad(number: int, message: str) -> InvalidInput:
    return InvalidInput(f"Malformed commit payload: line {number}: {message}")


class _Spool:
    """Base64 text in, decoded bytes to a temp file, hashed as they go."""

    def __init__(self, spool_dir: Path, number: int, max_size: int | None = None) -> None:
        self.max_size = max_size
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="commit-")
        self.fh = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.digest = hashlib.sha256()
        self.size = 0
        self.pending = b""
        self.number = number

    def feed(self, text: bytes) -> None:
        text = self.pending + text.replace(b"\\/", b"/")
        if text.endswith(b"\\"):  # half of an escaped "\/": wait for the rest
            text, self.pending = text[:-1], b"\\"
        else:
            self.pending = b""
        if _B64.fullmatch(text) is None:
            raise _bad(self.number, "file content is not valid base64")
        usable = len(text) - len(text) % 4
        self.pending = text[usable:] + self.pending
        if usable:
            try:
                data = base64.b64decode(text[:usable], validate=True)
            except (binascii.Error, ValueError):
                raise _bad(self.number, "file content is not valid base64") from None
            self.digest.update(data)
            self.size += len(data)
            if self.max_size is not None and self.size >= self.max_size:
                raise TooLarge(
                    f"Line {self.number}: a file of {self.max_size} bytes or more was sent inline; this hub takes "
                    "large files through LFS: set HF_HUB_DISABLE_XET=1 and upload again",
                    code="LfsRequired",
                )
            self.fh.write(data)

    def finish(self) -> Spooled:
        if self.pending:
            raise _bad(self.number, "file content is not valid base64")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return Spooled(self.path, self.digest.hexdigest(), self.size)

    def discard(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def iter_items(
    chunks: Iterable[bytes], spool_dir: Path, *, created: list[Path], max_file: int | None = None
) -> Iterator[tuple[int, Any, Spooled | None]]:
    """(line number, parsed JSON, spooled content or None) for each non-empty line.

    `max_file`: inline content this big is refused as soon as that many bytes are decoded
    (`TooLarge`, code `LfsRequired`): such files go through LFS.

    Spooled temp files are listed in `created` as soon as they exist; they belong to the caller
    (delete them when done, adopted or not).

    Raises:
        InvalidInput: a line that is not JSON, or bad base64 in a long line.
    """
    buf = bytearray()
    searched = 0  # buf[:searched] holds no newline (so trickled bytes are scanned once)
    number = 0
    spool: _Spool | None = None
    head = b""  # a long line: its text up to the content string
    tail: bytearray | None = None  # its text after the content string; None while inside it
    try:
        for chunk in chunks:
            buf += chunk
            while buf:
                if spool is None:
                    nl = buf.find(b"\n", searched)
                    if 0 <= nl <= LINE_LIMIT and (nl <= SPOOL_OVER or _CONTENT_KEY.search(buf, 0, nl) is None):
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        searched = 0
                        number += 1
                        if line.strip():
                            yield number, _loads(number, line), None
                        continue
                    searched = len(buf) if nl < 0 else 0
                    # Content over SPOOL_OVER goes to a spool file whatever the line's length: 800
                    # parsed 240 KB lines held 164 MB until the commit was applied.
                    match = _CONTENT_KEY.search(buf) if len(buf) > SPOOL_OVER else None
                    if match is None:
                        if len(buf) <= LINE_LIMIT:
                            break
                        raise _bad(number + 1, f"a line over {LINE_LIMIT} bytes must be a file with inline content")
                    number += 1
                    head, tail = bytes(buf[: match.end()]), None
                    del buf[: match.end()]
                    searched = 0
                    spool = _Spool(spool_dir, number, max_file)
                    created.append(spool.path)
                if tail is None:
                    quote = buf.find(b'"')
                    if quote < 0:
                        keep = 1 if buf.endswith(b"\\") else 0
                        spool.feed(bytes(buf[: len(buf) - keep]))
                        del buf[: len(buf) - keep]
                        break
                    spool.feed(bytes(buf[:quote]))
                    del buf[:quote]
                    tail = bytearray()
                nl = buf.find(b"\n")
                if nl < 0:
                    tail += buf
                    buf.clear()
                    if len(tail) > LINE_LIMIT:
                        raise _bad(number, "too much text after the file content")
                    break
                tail += buf[:nl]
                del buf[: nl + 1]
                spooled = spool.finish()
                spool = None
                yield number, _loads(number, head + bytes(tail)), spooled
        if spool is not None:
            raise _bad(number, "the body ended inside a file's content")
        if buf.strip():
            number += 1
            yield number, _loads(number, bytes(buf)), None
    finally:
        if spool is not None:
            spool.discard()


def _loads(number: int, line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise _bad(number, "not a JSON object with 'key' and 'value'") from None
