"""A seeded fuzz pass over every route of the embedded hub, anonymous and as a user.

`run_fuzz` is shared with `bench/bench_hub.py --fuzz N` (≥ 2,000 requests there, a few hundred
here). Every request must get an HTTP answer below 500 on a live connection, and nothing may be
written outside the data directory.
"""

from __future__ import annotations

import http.client
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from tests._fixtures.hub import HubHandle

TEMPLATES = [
    "/api/whoami-v2",
    "/api/validate-yaml",
    "/api/repos/create",
    "/api/repos/delete",
    "/api/repos/move",
    "/api/agent-harnesses",
    "/api/telemetry/{x}",
    "/api/settings/webhooks",
    "/api/settings/webhooks/{x}",
    "/api/settings/webhooks/{x}/{action}",
    "/lfs-upload/{oid}",
    "/api/{types}",
    "/api/{types}/{ns}/{name}",
    "/api/{types}/{ns}/{name}/revision/{rev}",
    "/api/{types}/{ns}/{name}/tree/{rev}",
    "/api/{types}/{ns}/{name}/tree/{rev}/{path}",
    "/api/{types}/{ns}/{name}/paths-info/{rev}",
    "/api/{types}/{ns}/{name}/preupload/{rev}",
    "/api/{types}/{ns}/{name}/commit/{rev}",
    "/api/{types}/{ns}/{name}/refs",
    "/api/{types}/{ns}/{name}/commits/{rev}",
    "/api/{types}/{ns}/{name}/branch/{rev}",
    "/api/{types}/{ns}/{name}/tag/{rev}",
    "/api/{types}/{ns}/{name}/settings",
    "/api/{types}/{ns}/{name}/xet-read-token/{rev}",
    "/api/{types}/{ns}/{name}/super-squash/{rev}",
    "/api/{types}/{ns}/{name}/auth-check",
    "/api/{types}/{ns}/{name}/auth-check/write",
    "/api/{types}/{ns}/{name}/user-access-request/{x}",
    "/api/{types}/{ns}/{name}/user-access-request/grant",
    "/api/{types}/{ns}/{name}/lfs-files",
    "/api/{types}/{ns}/{name}/lfs-files/batch",
    "/api/{types}/{name}",
    "{prefix}/{ns}/{name}/ask-access",
    "/api/{types}/{ns}/{name}/discussions",
    "/api/{types}/{ns}/{name}/discussions/{num}",
    "/api/{types}/{ns}/{name}/discussions/{num}/{action}",
    "/api/{types}/{ns}/{name}/discussions/{num}/comment/{x}/{action}",
    "{prefix}/{ns}/{name}/resolve/{rev}/{path}",
    "{prefix}/{ns}/{name}.git/info/lfs/objects/batch",
    "{prefix}/{ns}/{name}.git/info/lfs/objects/verify",
    "/{x}",
    "/{x}/{x}/{x}/{x}/{x}/{x}",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
WEIRD = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2Fetc%2Fpasswd",
    "..%2F..%2F..%2Ftmp",
    "%00",
    "%ff%fe",
    "a" * 300,
    "%2F",
    "refs%2Fpr%2F1",
    "refs%2Fheads%2Fmain",
    "main",
    "0" * 40,
    "abcde",
    ".git",
    "x.git",
    "%C3%A9t%C3%A9",
    "-",
    "~",
    "%25",
    "api",
    "datasets",
    "%20",
]


def _part(rng: random.Random, kind: str, repos: list[str]) -> str:
    if kind in ("ns", "name") and rng.random() < 0.6:
        ns, name = rng.choice(repos).split("/")
        return ns if kind == "ns" else name
    if kind == "types":
        return rng.choice(["models", "datasets", "spaces", "bogus", "model"])
    if kind == "prefix":
        return rng.choice(["", "/datasets", "/spaces", "/models"])
    if kind == "rev" and rng.random() < 0.5:
        return rng.choice(["main", "refs%2Fpr%2F1", "v1", "0" * 40])
    if kind == "path" and rng.random() < 0.4:
        return rng.choice(["README.md", "a/b.txt", ".gitattributes", "x%2Fy", "../../etc/passwd", "a//b"])
    if kind == "oid":
        return rng.choice(["0" * 64, "g" * 64, "abc", rng.randbytes(32).hex()])
    if kind == "num":
        return rng.choice(["1", "0", "-1", "99999999999999999999", "x"])
    if kind == "action":
        return rng.choice(["comment", "status", "title", "merge", "edit", "hide", "enable", "disable", "deliveries"])
    if rng.random() < 0.7:
        return rng.choice(WEIRD)
    return quote(rng.randbytes(rng.randint(1, 12)).decode("latin-1"), safe="")


def _json_value(rng: random.Random, depth: int = 0) -> object:
    pick = rng.random()
    if depth > 3 or pick < 0.3:
        return rng.choice([None, True, 0, -1, 2**70, 1.5, "", "x" * rng.randint(0, 50), "../..", "main", [], {}])
    if pick < 0.6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["name", "organization", "type", "private", "visibility", "fromRepo", "toRepo", "files", "path", "size",
            "sample", "operation", "objects", "oid", "transfers", "paths", "expand", "url", "watched", "domains",
            "secret", "title", "description", "comment", "status", "content", "tag", "startingPoint", "gated",
            "pullRequest", "repoType", "deletions", "sha", "rewriteHistory", "user", "requestId", "message",
            "gitIgnore"]  # fmt: skip
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _body(rng: random.Random) -> tuple[bytes, str]:
    pick = rng.random()
    if pick < 0.2:
        return b"", ""
    if pick < 0.55:
        return json.dumps(_json_value(rng)).encode(), "application/json"
    if pick < 0.7:  # NDJSON commits, good and bad
        lines = [{"key": "header", "value": {"summary": "fuzz", "parentCommit": rng.choice([None, "zz", "0" * 40])}}]
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(["file", "lfsFile", "deletedFile", "deletedFolder", "copy", "header"])
            lines.append({"key": key, "value": _json_value(rng) or {"path": rng.choice(WEIRD)}})
        return "\n".join(json.dumps(line) for line in lines).encode(), "application/x-ndjson"
    if pick < 0.8:
        return b"[" * rng.randint(1, 5000), "application/json"
    if pick < 0.9:
        return b"paths=a&paths=../x&expand=1", "application/x-www-form-urlencoded"
    return rng.randbytes(rng.randint(1, 2000)), rng.choice(["application/octet-stream", "application/json", ""])


def fuzz_requests(
    seed: int, n: int, *, tokens: list[str | None], repos: list[str]
) -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    """`n` seeded requests: (method, target, headers, body)."""
    rng = random.Random(seed)
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        target = template
        while "{" in target:
            start = target.index("{")
            end = target.index("}", start)
            target = target[:start] + _part(rng, target[start + 1 : end], repos) + target[end + 1 :]
        target = target or "/"
        if rng.random() < 0.3:
            query = rng.choice(["recursive=true", "expand=true", "cursor=-1", "cursor=abc", "limit=x", "full=1",
                                "cardData=1", "create_pr=1", "p=-3", "filter=a&filter=b", "blobs=true",
                                "size=1&expires=1&sig=x&repo=model/alice/x", "%ff=%fe"])  # fmt: skip
            target += "?" + query
        headers: dict[str, str] = {}
        token = rng.choice(tokens)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if rng.random() < 0.1:
            headers["Range"] = rng.choice(["bytes=0-0", "bytes=-5", "bytes=5-2", "bytes=99999999-", "bytes=a-b"])
        body, ctype = _body(rng)
        if ctype:
            headers["Content-Type"] = ctype
        yield rng.choice(METHODS), target, headers, body


@dataclass
class FuzzReport:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _snapshot(root: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        out.update(os.path.join(dirpath, f) for f in filenames + dirnames)
    return out


def run_fuzz(url: str, *, seed: int, n: int, tokens: list[str | None], repos: list[str]) -> FuzzReport:
    """Send `n` fuzz requests, each on a fresh connection; record statuses, 5xx and dropped connections."""
    parts = urlsplit(url)
    report = FuzzReport()
    for method, target, headers, body in fuzz_requests(seed, n, tokens=tokens, repos=repos):
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                conn.putheader(key, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            response.read()
            report.statuses[response.status] = report.statuses.get(response.status, 0) + 1
            if response.status >= 500 and response.status != 501:  # 501: Xet token routes, by design
                report.server_errors.append(f"{method} {target} -> {response.status}")
        except (http.client.HTTPException, OSError) as exc:
            report.dropped.append(f"{method} {target}: {type(exc).__name__}")
        finally:
            conn.close()
            report.sent += 1
    return report


def test_fuzz_every_route_anonymous_and_as_users(hub: HubHandle) -> None:
    api = hub.api()
    api.create_repo("alice/fuzzed", exist_ok=True)
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# hi\n", path_in_repo="README.md", repo_id="alice/fuzzed")
    api.create_repo("alice/fuzz-private", private=True, exist_ok=True)
    outside = hub.data_dir.parent
    before = _snapshot(outside, hub.data_dir)
    report = run_fuzz(
        hub.url,
        seed=9,
        n=300,
        tokens=[None, hub.token, hub.read_token, hub.bob_token, "hf_bogus"],
        repos=["alice/fuzzed", "alice/fuzz-private", "bob/none", "lab/x"],
    )
    assert report.server_errors == [] and report.dropped == [], (report.server_errors[:5], report.dropped[:5])
    assert sum(report.statuses.values()) == 300 and len(report.statuses) > 3
    assert _snapshot(outside, hub.data_dir) == before
    assert api.model_info("alice/fuzzed").sha  # still serving, repo intact
