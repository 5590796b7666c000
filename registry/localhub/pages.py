"""HTML pages a person can open: a repo (`/{ns}/{name}`, `/datasets/…`, `/spaces/…`), one of its
discussions (`…/discussions/{num}`) and one of its commits (`…/commit/{id}`), and `/login`.

They answer the links the bot writes into comments and cards, the Space's model links, and
`commitUrl`/`pullRequestUrl` of the API. Access is the API's: a private repo is the same 404 page
as a missing one for whoever may not see it; a gated repo shows its card and file list, and its
downloads answer 403 until access is granted. A person signs in through `/login` (the OpenID
provider's sign-in form, `oauth.py`); its `hub_session` cookie then counts for GET requests.

The card is markdown rendered by markdown-it-py (CommonMark + tables) with raw HTML disabled, so
the text cannot inject markup or script; markdown-it refuses `javascript:`, `vbscript:` and
`file:` links itself. Every other value is escaped with `html.escape`.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from registry.localhub.cards import tags_from_card
from registry.localhub.http import Request, Response
from registry.localhub.names import NotFound, StorageError, web_path
from registry.localhub.oauth import _login_page, page, session_user
from registry.localhub.routes_repos import card_of

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub
    from registry.localhub.storage import RepoStore

_STYLE = (
    "<style>body{max-width:60em}table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left;"
    "border-bottom:1px solid #ddd}.tag{background:#eef;border-radius:.3em;padding:0 .3em;margin:0 .2em}"
    ".card{border:1px solid #ddd;padding:0 1em;margin:1em 0}.event{border-left:3px solid #ccd;padding-left:.8em;"
    "margin:1em 0}.muted{color:#666}</style>"
)


def _render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def _card_body(text: str) -> str:
    """The README without its YAML front matter."""
    lines = text.lstrip("\ufeff").lstrip("\r\n").splitlines()
    if lines and lines[0].strip() == "---":
        for end in range(1, len(lines)):
            if lines[end].strip() == "---":
                return "\n".join(lines[end + 1 :])
    return text


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _header(hub: LocalHub, req: Request, here: str) -> str:
    user = session_user(hub, req)
    who = (
        f"signed in as <b>{html.escape(user)}</b>"
        if user
        else f"<a href='/login?{urlencode({'return_to': here})}' id='signin-link'>Sign in</a>"
    )
    return f"{_STYLE}<p class='muted'><a href='/'>hub</a> · {who}</p>"


def _not_found(hub: LocalHub, req: Request, here: str, message: str) -> Response:
    body = f"{_header(hub, req, here)}<p>{html.escape(message)}</p>"
    return page("Not found", body, status=404)


def _store(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> RepoStore:
    return hub.read_repo(req, repo_type, repo_id)


def repo_page(hub: LocalHub, req: Request, repo_type: str, repo_id: str) -> Response:
    here = web_path(repo_type, repo_id)
    try:
        store = _store(hub, req, repo_type, repo_id)
        commit = store.commit(store.resolve("main"))
    except NotFound:
        return _not_found(hub, req, here, f"Repository not found: {repo_id}. If it is private, sign in.")
    from registry.localhub import discussions as disc_mod

    rid = store.repo_id
    base = web_path(repo_type, rid)
    card = card_of(hub, store, commit)
    badges = []
    if store.info.get("private"):
        badges.append("private")
    if store.info.get("gated") in ("auto", "manual"):
        badges.append(f"gated ({store.info['gated']})")
    tags = "".join(f"<span class='tag'>{html.escape(t)}</span>" for t in tags_from_card(card, repo_type=repo_type))
    meta_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_short(v))}</td></tr>" for k, v in sorted(card.items())
    )
    readme = commit.entry("README.md")
    rendered = ""
    if readme is not None and readme.size <= 1_000_000:
        text = hub.storage.blobs.path(readme.sha256).read_text(encoding="utf-8", errors="replace")
        rendered = f"<div class='card' id='card'>{_render_markdown(_card_body(text))}</div>"
    files = "".join(
        f"<tr><td><a href='{base}/resolve/main/{quote(path)}'>{html.escape(path)}</a></td>"
        f"<td>{_size(entry.size)}</td><td>{'LFS' if entry.lfs else ''}</td></tr>"
        for path, entry in sorted(commit.files.items())[:1000]
    )
    more = f"<p class='muted'>and {len(commit.files) - 1000} more files</p>" if len(commit.files) > 1000 else ""
    commits = []
    for c in store.history(commit.id):
        commits.append(
            f"<li><a href='{base}/commit/{c.id}'><code>{c.id[:8]}</code></a> {html.escape(c.title)} "
            f"<span class='muted'>{html.escape(c.author)}, {html.escape(c.date)}</span></li>"
        )
        if len(commits) == 10:
            break
    items = sorted(disc_mod._load(store)["items"].values(), key=lambda d: -int(d["num"]))
    discussions = "".join(
        f"<li><a href='{base}/discussions/{d['num']}'>#{d['num']} {html.escape(d['title'])}</a> "
        f"<span class='muted'>{'pull request' if d.get('isPullRequest') else 'discussion'}, "
        f"{html.escape(d['status'])}, by {html.escape(d['author']['name'])}</span></li>"
        for d in items[:50]
    )
    body = (
        f"{_header(hub, req, base)}<p>{html.escape(repo_type)} · {' · '.join(badges) or 'public'}</p>"
        f"<p id='tags'>{tags}</p>"
        + (f"<h2>Metadata</h2><table id='metadata'>{meta_rows}</table>" if meta_rows else "")
        + rendered
        + f"<h2>Files</h2><table id='files'><tr><th>Path</th><th>Size</th><th></th></tr>{files}</table>{more}"
        + f"<h2>Last commits</h2><ul id='commits'>{''.join(commits)}</ul>"
        + f"<h2>Discussions</h2><ul id='discussions'>{discussions or '<li>None yet.</li>'}</ul>"
    )
    return page(rid, body)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else __import__("json").dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "…"


def discussion_page(hub: LocalHub, req: Request, repo_type: str, repo_id: str, num: str) -> Response:
    from registry.localhub import discussions as disc_mod

    here = f"{web_path(repo_type, repo_id)}/discussions/{num}"
    try:
        store = _store(hub, req, repo_type, repo_id)
    except NotFound:
        return _not_found(hub, req, here, f"Repository not found: {repo_id}. If it is private, sign in.")
    d = disc_mod._load(store)["items"].get(num)
    if d is None:
        return _not_found(hub, req, here, f"Discussion #{num} not found in {store.repo_id}.")
    base = web_path(repo_type, store.repo_id)
    events = []
    for e in d["events"]:
        who = html.escape(e["author"]["name"])
        when = html.escape(e["createdAt"])
        if e["type"] == "comment":
            if e["data"].get("hidden"):
                text = "<p class='muted'>This comment was hidden.</p>"
            else:
                text = _render_markdown(e["data"]["latest"]["raw"])
            events.append(f"<div class='event comment'><p class='muted'>{who}, {when}</p>{text}</div>")
        else:
            what = html.escape(f"{e['type']}: {_short(e.get('data', {}))}")
            events.append(f"<div class='event'><p class='muted'>{who}, {when}: {what}</p></div>")
    kind = "Pull request" if d.get("isPullRequest") else "Discussion"
    body = (
        f"{_header(hub, req, here)}<p><a href='{base}'>{html.escape(store.repo_id)}</a> · {kind} #{d['num']} · "
        f"<span id='status'>{html.escape(d['status'])}</span></p>{''.join(events)}"
    )
    return page(f"{d['title']}", body)


def commit_page(hub: LocalHub, req: Request, repo_type: str, repo_id: str, commit_id: str) -> Response:
    here = f"{web_path(repo_type, repo_id)}/commit/{commit_id}"
    try:
        store = _store(hub, req, repo_type, repo_id)
        commit = store.commit(store.resolve(commit_id))
    except (NotFound, StorageError):
        return _not_found(hub, req, here, f"Commit {commit_id} not found in {repo_id}.")
    base = web_path(repo_type, store.repo_id)
    parent = store.commit(commit.parents[0]).files if commit.parents else {}
    changed = sorted(p for p in set(commit.files) | set(parent) if commit.files.get(p) != parent.get(p))
    rows = "".join(
        f"<li>{'deleted' if p not in commit.files else 'added' if p not in parent else 'changed'}: "
        f"{html.escape(p)}</li>"
        for p in changed[:1000]
    )
    body = (
        f"{_header(hub, req, here)}<p><a href='{base}'>{html.escape(store.repo_id)}</a> · "
        f"<code>{commit.id}</code></p><p class='muted'>{html.escape(commit.author)}, {html.escape(commit.date)}</p>"
        f"{_render_markdown(commit.message) if commit.message else ''}<h2>Files</h2><ul id='changed'>{rows}</ul>"
    )
    return page(commit.title, body)


def login_page(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    return_to = req.q("return_to") or "/"
    return _login_page({}, return_to=return_to)


def home(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    who = hub.principal(req)
    rows = []
    for t in ("model", "dataset", "space"):
        for store in hub.storage.iter_repos(t):
            try:
                if hub.can_see(who, store):
                    rows.append(
                        f"<li><a href='{web_path(t, store.repo_id)}'>{html.escape(store.repo_id)}</a> ({t})</li>"
                    )
            except (OSError, ValueError, KeyError):
                continue
            if len(rows) >= 500:
                break
    return page("Embedded hub", f"{_header(hub, req, '/')}<ul id='repos'>{''.join(rows)}</ul>")
