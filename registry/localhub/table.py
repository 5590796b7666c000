"""The route table of the embedded hub: (path template on the RAW path, {method: handler}).

`registry.localhub.edge` serves it with Starlette; path parameters arrive percent-decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from registry.localhub import discussions, gating, lfs, oauth, pages, routes_files, routes_repos, webhooks
from registry.localhub.http import Request, Response
from registry.localhub.names import NotSupported, validate_name

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

Params = dict[str, str]
Handler = Callable[["LocalHub", Request, Params], Response]
WEB_PREFIX = {"model": "", "dataset": "/datasets", "space": "/spaces"}


def on_loop(handler: Handler) -> Handler:
    """Mark `handler` as cheap enough to run on the event loop when the request has no body (the edge
    runs every other route in a worker thread): only routes that read a few small cached files."""
    handler.on_loop = True  # type: ignore[attr-defined]
    return handler


def _repo_id(p: Params) -> str:
    """`ns/name` from path parameters, each part checked (a bad name is 400, never a path)."""
    return f"{validate_name(p['ns'], what='namespace')}/{validate_name(p['name'], what='repo name')}"


def _xet(hub: LocalHub, req: Request, p: Params) -> Response:
    raise NotSupported(
        "This hub does not speak Xet: set HF_HUB_DISABLE_XET=1 and upload again (large files then go "
        "through LFS; registry.hub.HubClient does this for you)",
        code="XetNotSupported",
    )


def _repo_routes(t: str) -> list[tuple[str, dict[str, Handler]]]:
    """The routes of one repo type `t` (model, dataset, space)."""
    api = f"/api/{t}s/{{ns}}/{{name}}"
    web = WEB_PREFIX[t] + "/{ns}/{name}"

    def rid(p: Params) -> str:
        return _repo_id(p)

    def disc(*names: str) -> Handler:
        def handler(hub: LocalHub, req: Request, p: Params) -> Response:
            return discussions.route(hub, req, t, rid(p), [p[n] if n in p else n for n in names])

        return handler

    return [
        (api, {"GET": on_loop(lambda h, r, p: routes_repos.info(h, r, t, rid(p), revision=None))}),
        (api + "/revision/{rev:path}", {"GET": lambda h, r, p: routes_repos.info(h, r, t, rid(p), revision=p["rev"])}),
        (api + "/tree", {"GET": lambda h, r, p: routes_files.tree(h, r, t, rid(p), revision="main", path="")}),
        (
            api + "/tree/{rev}",
            {"GET": lambda h, r, p: routes_files.tree(h, r, t, rid(p), revision=p["rev"], path="")},
        ),
        (
            api + "/tree/{rev}/{path:path}",
            {"GET": lambda h, r, p: routes_files.tree(h, r, t, rid(p), revision=p["rev"], path=p["path"])},
        ),
        (
            api + "/paths-info/{rev:path}",
            {"POST": lambda h, r, p: routes_files.paths_info(h, r, t, rid(p), revision=p["rev"])},
        ),
        (
            api + "/preupload/{rev:path}",
            {"POST": lambda h, r, p: routes_files.preupload(h, r, t, rid(p), revision=p["rev"])},
        ),
        (api + "/commit/{rev:path}", {"POST": lambda h, r, p: routes_files.commit(h, r, t, rid(p), revision=p["rev"])}),
        (api + "/refs", {"GET": lambda h, r, p: routes_repos.refs(h, r, t, rid(p))}),
        (api + "/commits", {"GET": lambda h, r, p: routes_repos.commits(h, r, t, rid(p), revision="main")}),
        (
            api + "/commits/{rev:path}",
            {"GET": lambda h, r, p: routes_repos.commits(h, r, t, rid(p), revision=p["rev"] or "main")},
        ),
        (
            api + "/branch/{rev:path}",
            {
                "POST": lambda h, r, p: routes_repos.create_branch(h, r, t, rid(p), branch=p["rev"]),
                "DELETE": lambda h, r, p: routes_repos.delete_ref(h, r, t, rid(p), kind="heads", name=p["rev"]),
            },
        ),
        (
            api + "/tag/{rev:path}",
            {
                "POST": lambda h, r, p: routes_repos.create_tag(h, r, t, rid(p), revision=p["rev"]),
                "DELETE": lambda h, r, p: routes_repos.delete_ref(h, r, t, rid(p), kind="tags", name=p["rev"]),
            },
        ),
        (api + "/settings", {"PUT": lambda h, r, p: routes_repos.settings(h, r, t, rid(p))}),
        (
            api + "/super-squash/{rev:path}",
            {"POST": lambda h, r, p: routes_repos.super_squash(h, r, t, rid(p), branch=p["rev"])},
        ),
        (api + "/auth-check", {"GET": lambda h, r, p: gating.auth_check(h, r, t, rid(p), write=False)}),
        (api + "/auth-check/write", {"GET": lambda h, r, p: gating.auth_check(h, r, t, rid(p), write=True)}),
        (
            api + "/user-access-request/handle",
            {"POST": lambda h, r, p: gating.handle_request(h, r, t, rid(p), grant=False)},
        ),
        (
            api + "/user-access-request/grant",
            {"POST": lambda h, r, p: gating.handle_request(h, r, t, rid(p), grant=True)},
        ),
        (
            api + "/user-access-request/{status}",
            {"GET": lambda h, r, p: gating.list_requests(h, r, t, rid(p), status=p["status"])},
        ),
        (api + "/lfs-files", {"GET": lambda h, r, p: lfs.list_lfs_files(h, r, t, rid(p))}),
        (api + "/lfs-files/batch", {"POST": lambda h, r, p: lfs.delete_lfs_files(h, r, t, rid(p))}),
        (web + "/ask-access", {"POST": lambda h, r, p: gating.ask_access(h, r, t, rid(p))}),
        (web, {"GET": lambda h, r, p: pages.repo_page(h, r, t, rid(p))}),
        (web + "/discussions/{num}", {"GET": lambda h, r, p: pages.discussion_page(h, r, t, rid(p), p["num"])}),
        (web + "/commit/{cid}", {"GET": lambda h, r, p: pages.commit_page(h, r, t, rid(p), p["cid"])}),
        (api + "/xet-read-token/{rev:path}", {"GET": _xet}),
        (api + "/xet-write-token/{rev:path}", {"GET": _xet}),
        (api + "/discussions", {"GET": disc(), "POST": disc()}),
        (api + "/discussions/{num}", {"GET": disc("num")}),
        (api + "/discussions/{num}/{action}", {"POST": disc("num", "action")}),
        (api + "/discussions/{num}/comment/{cid}/{op}", {"POST": disc("num", "comment", "cid", "op")}),
        (
            web + "/resolve/{rev}/{path:path}",
            {"GET": on_loop(lambda h, r, p: routes_files.resolve(h, r, t, rid(p), revision=p["rev"], path=p["path"]))},
        ),
        (web + ".git/info/lfs/objects/batch", {"POST": lambda h, r, p: lfs.batch(h, r, t, rid(p))}),
        (web + ".git/info/lfs/batch", {"POST": lambda h, r, p: lfs.batch(h, r, t, rid(p))}),
        (web + ".git/info/lfs/objects/verify", {"POST": lambda h, r, p: lfs.verify(h, r, t, rid(p))}),
        (web + ".git/info/lfs/verify", {"POST": lambda h, r, p: lfs.verify(h, r, t, rid(p))}),
    ]


def _one_part(t: str) -> Handler:
    return lambda h, r, p: routes_repos.one_part_id(h, r, t, p["name"])


def _lister(t: str) -> Handler:
    return lambda h, r, p: routes_repos.list_repos(h, r, t)


def route_table() -> list[tuple[str, dict[str, Handler]]]:
    """Every route: (path template on the raw path, {method: handler}). First match wins."""
    rows: list[tuple[str, dict[str, Handler]]] = [
        ("/api/whoami-v2", {"GET": on_loop(lambda h, r, p: routes_repos.whoami(h, r))}),
        ("/api/validate-yaml", {"POST": lambda h, r, p: routes_files.validate_yaml(h, r)}),
        ("/api/repos/create", {"POST": lambda h, r, p: routes_repos.create(h, r)}),
        ("/api/repos/delete", {"DELETE": lambda h, r, p: routes_repos.delete(h, r)}),
        ("/api/repos/move", {"POST": lambda h, r, p: routes_repos.move(h, r)}),
        ("/api/agent-harnesses", {"GET": lambda h, r, p: Response.json({"standardEnvVars": [], "harnesses": {}})}),
        ("/api/telemetry/{rest:path}", {m: lambda h, r, p: Response.json({}) for m in ("GET", "POST")}),
        ("/api/settings/webhooks", {m: lambda h, r, p: webhooks.route(h, r, []) for m in ("GET", "POST")}),
        (
            "/api/settings/webhooks/{hook}",
            {m: lambda h, r, p: webhooks.route(h, r, [p["hook"]]) for m in ("GET", "POST", "DELETE")},
        ),
        (
            "/api/settings/webhooks/{hook}/{action}",
            {m: lambda h, r, p: webhooks.route(h, r, [p["hook"], p["action"]]) for m in ("GET", "POST")},
        ),
        ("/lfs-upload/{oid}", {"PUT": lambda h, r, p: lfs.upload(h, r, oid=p["oid"])}),
        *oauth.routes(),
        ("/login", {"GET": pages.login_page}),
        ("/", {"GET": pages.home}),
    ]
    for t in ("dataset", "space"):  # before models: `/datasets/x/y/...` is not a model `datasets/x`
        rows += _repo_routes(t)
    rows += [(f"/api/{t}s", {"GET": _lister(t)}) for t in ("model", "dataset", "space")]
    rows += _repo_routes("model")
    every = ("GET", "POST", "PUT", "DELETE", "PATCH")
    for t in ("model", "dataset", "space"):  # `gpt2`-style ids: a RepoNotFound, not "no route"
        web = {"model": "", "dataset": "/datasets", "space": "/spaces"}[t]
        rows += [
            (f"/api/{t}s/{{name}}", {"GET": _one_part(t)}),
            (f"/api/{t}s/{{name}}/{{rest:path}}", dict.fromkeys(every, _one_part(t))),  # commits, like, preupload, ...
            (web + "/{name}/resolve/{rev}/{path:path}", {"GET": _one_part(t)}),
        ]
    return rows
