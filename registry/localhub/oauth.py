"""Sign in with Hugging Face, offline: the OAuth 2.0 / OpenID Connect provider of the embedded hub.

The endpoints the Hub serves for "Sign in with HF", so that Gradio's `gr.LoginButton` and
huggingface_hub's `attach_huggingface_oauth` (both authlib clients reading
`OPENID_PROVIDER_URL`, `OAUTH_CLIENT_ID`, `OAUTH_CLIENT_SECRET`, `OAUTH_SCOPES`) work against it:

- `GET /.well-known/openid-configuration`, `GET /oauth/jwks`;
- `GET /oauth/authorize`: a sign-in page for the hub's users (`registry hub user create`), then a
  consent page listing the scopes; `POST /oauth/login` (the sign-in form), `POST /oauth/authorize`
  (the consent form, with a CSRF token bound to the session);
- `POST /oauth/token`: `authorization_code` only; the client authenticates with its secret (HTTP
  Basic or form), PKCE (S256) is checked when the authorize request carried a challenge;
- `GET|POST /oauth/userinfo`: the signed-in user's claims, for an access token with `openid`.

Rules: the redirect URI must equal one registered for the app (`registry hub oauth-app create`),
else the error is shown on the hub's page and nothing is redirected; a code lives 60 s and works
once: a replayed code is refused and the token issued from it revoked (RFC 6749 §4.1.2). Access
tokens carry exactly the scopes granted (`read-repos`, `write-repos`, `manage-repos`, ...) and never
more than the user's own rights (`auth.Principal`), and expire after 8 hours.

The sign-in cookie (`hub_session`, HMAC-signed with the server secret, HttpOnly, SameSite=Lax) is
also what the repo pages accept (`session_user`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from registry.localhub.http import Request, Response
from registry.localhub.idtoken import SigningKey, b64url

if TYPE_CHECKING:
    from registry.localhub.app import LocalHub

SCOPES = {
    "openid": "Know who you are (your user id)",
    "profile": "Read your name and organisations",
    "email": "Read your email address",
    "read-repos": "Read your private repos",
    "write-repos": "Write to your repos",
    "manage-repos": "Create, delete and move your repos",
    "inference-api": "Call inference on your behalf",
    "read-billing": "Know whether you have a payment method",
}
CODE_TTL_S = 60
TOKEN_TTL_S = 8 * 3600
SESSION_TTL_S = 7 * 24 * 3600
SESSION_COOKIE = "hub_session"
_FORM_LIMIT = 64 * 1024
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # the consent page must not be framed (clickjacking)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    user: str
    scopes: list[str]
    nonce: str | None
    challenge: str | None
    expires: float
    auth_time: int
    token: str | None = None  # the access token issued from it (revoked when the code is replayed)


class OAuthProvider:
    """Authorization codes (in memory: a restart just asks the user to sign in again) and the ID-token key."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._key: SigningKey | None = None

    @property
    def key(self) -> SigningKey:
        with self._lock:
            if self._key is None:
                self._key = SigningKey.load_or_create(self.hub.data_dir / ".oauth-key.json")
            return self._key

    def new_code(self, grant: _Grant) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._grants = {c: g for c, g in self._grants.items() if g.expires > now - CODE_TTL_S}
            self._grants[code] = grant
        return code

    def redeem(self, code: str) -> tuple[_Grant | None, bool]:
        """(the grant, whether it was already redeemed); marks it redeemed."""
        with self._lock:
            grant = self._grants.get(code)
            if grant is None:
                return None, False
            if grant.token is not None:
                return grant, True
            grant.token = ""  # redeemed; the token is filled in by the caller
            return grant, False


# -- the session cookie ---------------------------------------------------------------------------
def _sign(hub: LocalHub, value: str) -> str:
    return hmac.new(hub.secret, value.encode(), hashlib.sha256).hexdigest()


def session_cookie(hub: LocalHub, user: str) -> str:
    value = f"{b64url(user.encode())}.{int(time.time()) + SESSION_TTL_S}"
    return f"{value}.{_sign(hub, 'session:' + value)}"


def session_user(hub: LocalHub, req: Request) -> str | None:
    """The user signed in through the pages (a valid, unexpired `hub_session` cookie), else None."""
    raw = _cookies(req).get(SESSION_COOKIE)
    if not raw or raw.count(".") != 2:
        return None
    value, _, mac = raw.rpartition(".")
    if not hmac.compare_digest(mac, _sign(hub, "session:" + value)):
        return None
    name_b64, _, expires = value.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return None
    try:
        name = base64.urlsafe_b64decode(name_b64 + "=" * (-len(name_b64) % 4)).decode()
    except ValueError:
        return None
    return name if hub.accounts.user_record(name) is not None else None


def _cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


def _csrf(hub: LocalHub, req: Request) -> str:
    return _sign(hub, "csrf:" + _cookies(req).get(SESSION_COOKIE, ""))


# -- pages ------------------------------------------------------------------------------------------
def page(title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A small HTML page (the body is already escaped HTML)."""
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:34em;margin:3em auto;padding:0 1em}"
        "input,button{font-size:1em;margin:.3em 0;padding:.3em}.err{color:#b00}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(status=status, headers={**_PAGE_HEADERS, **(headers or {})}, body=doc.encode())


def _hidden(fields: dict[str, str]) -> str:
    return "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>" for k, v in fields.items())


def _form(req: Request) -> dict[str, str]:
    raw = req.body.read(limit=_FORM_LIMIT).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _query(req: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in req.query.items()}


class _Refused(Exception):
    """An authorize request refused on the hub's page (never redirected: the client or URI is unknown)."""


def _check_authorize(hub: LocalHub, params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The app and requested scopes of an authorize request.

    Raises:
        _Refused: unknown client or redirect URI (shown to the user, not redirected).
        _RedirectError: any other error, sent to the (valid) redirect URI.
    """
    app = hub.accounts.oauth_app(params.get("client_id", ""))
    if app is None:
        raise _Refused("Unknown client_id: this app is not registered on this hub (registry hub oauth-app create).")
    if not redirect_allowed(params.get("redirect_uri", ""), app["redirectUris"]):
        raise _Refused("This redirect_uri is not registered for the app; nothing was sent to it.")
    if params.get("response_type") != "code":
        raise _RedirectError("unsupported_response_type", "Only response_type=code is supported")
    scopes = params.get("scope", "").split()
    unknown = [s for s in scopes if s not in SCOPES or s not in app["scopes"]]
    if not scopes or unknown:
        raise _RedirectError("invalid_scope", f"Scopes not allowed for this app: {' '.join(unknown) or '(none)'}")
    if "code_challenge" in params and params.get("code_challenge_method", "plain") != "S256":
        raise _RedirectError("invalid_request", "Only code_challenge_method=S256 is supported")
    return app, list(dict.fromkeys(scopes))


def redirect_allowed(uri: str, registered: list[str]) -> bool:
    """Whether `uri` is a registered redirect URI, or one plus a query string.

    Gradio sends `.../login/callback?_target_url=/page` for a registered `.../login/callback`, as
    the Hub accepts; scheme, host, port and path must be equal, and no fragment is allowed.
    """
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        return False
    bare = parts._replace(query="").geturl()
    return any(uri == r or (not urlsplit(r).query and bare == r) for r in registered)


class _RedirectError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error


def _redirect(uri: str, params: dict[str, str], *, extra_headers: dict[str, str] | None = None) -> Response:
    sep = "&" if urlsplit(uri).query else "?"
    return Response(status=303, headers={"Location": uri + sep + urlencode(params), **(extra_headers or {})})


def _authorize_params(params: dict[str, str]) -> dict[str, str]:
    keys = (
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    )
    return {k: params[k] for k in keys if k in params}


def authorize_get(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    return _authorize(hub, req, _query(req), decision=None)


def authorize_post(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    form = _form(req)
    if not hmac.compare_digest(form.get("csrf", ""), _csrf(hub, req)) or session_user(hub, req) is None:
        return page("Sign-in expired", "<p class='err'>Your session expired; start the sign-in again.</p>", status=403)
    return _authorize(hub, req, form, decision=form.get("decision", "deny"))


def _authorize(hub: LocalHub, req: Request, params: dict[str, str], *, decision: str | None) -> Response:
    try:
        app, scopes = _check_authorize(hub, params)
    except _Refused as exc:
        return page("Sign-in refused", f"<p class='err'>{html.escape(str(exc))}</p>", status=400)
    except _RedirectError as exc:
        state = {"state": params["state"]} if "state" in params else {}
        return _redirect(params["redirect_uri"], {"error": exc.error, "error_description": str(exc), **state})
    state = {"state": params["state"]} if "state" in params else {}
    user = session_user(hub, req)
    if user is None:
        return _login_page(_authorize_params(params))
    if decision is None:
        rows = "".join(f"<li><code>{html.escape(s)}</code>: {html.escape(SCOPES[s])}</li>" for s in scopes)
        body = (
            f"<p><b>{html.escape(app['name'])}</b> asks to sign you in as <b>{html.escape(user)}</b> and to:</p>"
            f"<ul>{rows}</ul><form method='post' action='/oauth/authorize'>"
            f"{_hidden({**_authorize_params(params), 'csrf': _csrf(hub, req)})}"
            "<button name='decision' value='allow' id='allow'>Allow</button> "
            "<button name='decision' value='deny' id='deny'>Deny</button></form>"
        )
        return page(f"Authorize {app['name']}", body)
    if decision != "allow":
        return _redirect(params["redirect_uri"], {"error": "access_denied", **state})
    grant = _Grant(
        client_id=params["client_id"],
        redirect_uri=params["redirect_uri"],
        user=user,
        scopes=scopes,
        nonce=params.get("nonce"),
        challenge=params.get("code_challenge"),
        expires=time.time() + CODE_TTL_S,
        auth_time=int(time.time()),
    )
    return _redirect(params["redirect_uri"], {"code": hub.oauth.new_code(grant), **state})


def _login_page(params: dict[str, str], *, error: str = "", status: int = 200, return_to: str = "/") -> Response:
    err = f"<p class='err' id='error'>{html.escape(error)}</p>" if error else ""
    hidden = _hidden({"next": urlencode(params), "return_to": return_to})
    body = (
        f"{err}<form method='post' action='/oauth/login'>{hidden}"
        "<label>User name<br><input name='username' id='username' autocomplete='username' required></label><br>"
        "<label>Password<br><input name='password' id='password' type='password' "
        "autocomplete='current-password' required></label><br>"
        "<button type='submit' id='signin'>Sign in</button></form>"
    )
    return page("Sign in to the hub", body, status=status)


def login_post(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    form = _form(req)
    # `next` is an authorize query string, never a URL: no open redirect through the login form.
    params = {k: v[-1] for k, v in parse_qs(form.get("next", "")).items()}
    next_params = _authorize_params(params)
    user = hub.accounts.check_password(form.get("username", ""), form.get("password", ""))
    return_to = form.get("return_to", "/")
    if not return_to.startswith("/") or return_to.startswith("//") or "\\" in return_to:
        return_to = "/"  # a path on this hub only: never an open redirect
    if user is None:
        return _login_page(next_params, error="Wrong user name or password.", status=401, return_to=return_to)
    secure = "; Secure" if hub.public_url.startswith("https://") else ""
    cookie = f"{SESSION_COOKIE}={session_cookie(hub, user)}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_TTL_S}"
    target = "/oauth/authorize?" + urlencode(next_params) if next_params else return_to
    return Response(status=303, headers={"Location": target, "Set-Cookie": cookie + secure})


# -- token, userinfo, discovery ---------------------------------------------------------------------
def _token_error(error: str, description: str, status: int = 400) -> Response:
    return Response.json(
        {"error": error, "error_description": description}, status=status, headers={"Cache-Control": "no-store"}
    )


def _client_credentials(req: Request, form: dict[str, str]) -> tuple[str, str]:
    auth = req.headers.get("Authorization", "")
    if auth.lower().startswith("basic "):
        try:
            raw = base64.b64decode(auth[6:].strip()).decode()
        except ValueError:
            return "", ""
        from urllib.parse import unquote_plus

        client_id, _, secret = raw.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    return form.get("client_id", ""), form.get("client_secret", "")


def token(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    from registry.localhub.auth import hash_token

    form = _form(req)
    client_id, secret = _client_credentials(req, form)
    app = hub.accounts.oauth_app(client_id)
    if app is None or not hmac.compare_digest(hash_token(secret), app["secretHash"]):
        return _token_error("invalid_client", "Unknown client or wrong client secret", status=401)
    if form.get("grant_type") != "authorization_code":
        return _token_error("unsupported_grant_type", "Only grant_type=authorization_code is supported")
    grant, replayed = hub.oauth.redeem(form.get("code", ""))
    if grant is None or grant.client_id != client_id or grant.expires < time.time():
        return _token_error("invalid_grant", "The code is unknown, expired or for another client")
    if replayed:
        if grant.token:
            hub.accounts.revoke(grant.token)  # RFC 6749 §4.1.2: a replayed code revokes what it gave
        return _token_error("invalid_grant", "The code was already used; its token is revoked")
    if form.get("redirect_uri") != grant.redirect_uri:
        return _token_error("invalid_grant", "redirect_uri differs from the authorize request's")
    if grant.challenge is not None:
        verifier = form.get("code_verifier", "")
        expected = b64url(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not hmac.compare_digest(expected, grant.challenge):
            return _token_error("invalid_grant", "PKCE code_verifier does not match the code_challenge")
    access = hub.accounts.issue_oauth_token(grant.user, scopes=grant.scopes, app=app["name"], expires_in=TOKEN_TTL_S)
    grant.token = access
    out: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_S,
        "scope": " ".join(grant.scopes),
    }
    if "openid" in grant.scopes:
        now = int(time.time())
        claims = {
            "iss": hub.public_url,
            "aud": client_id,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "auth_time": grant.auth_time,
            "at_hash": b64url(hashlib.sha256(access.encode()).digest()[:16]),
            # No `orgs` list in the ID token: authlib puts these claims in the session, and Gradio's
            # `gr.Request` cannot wrap a list of objects (it fails on every event). `/oauth/userinfo` has them.
            **{k: v for k, v in _user_claims(hub, grant.user, grant.scopes).items() if k != "orgs"},
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        out["id_token"] = hub.oauth.key.jwt(claims)
    return Response.json(out, headers={"Cache-Control": "no-store"})


def _user_claims(hub: LocalHub, user: str, scopes: list[str]) -> dict[str, Any]:
    record = hub.accounts.user_record(user) or {}
    claims: dict[str, Any] = {"sub": hashlib.sha256(f"user:{user}:{record.get('createdAt')}".encode()).hexdigest()[:24]}
    if "profile" in scopes:
        claims.update(
            name=user,
            preferred_username=user,
            profile=f"{hub.public_url}/{user}",
            picture="",
            website="",
            isPro=False,
            canPay=False,
            orgs=[
                {
                    "sub": hashlib.sha256(f"org:{o}".encode()).hexdigest()[:24],
                    "name": o,
                    "preferred_username": o,
                    "picture": "",
                    "isEnterprise": False,
                }
                for o in record.get("orgs", [])
            ],
        )
    return claims


def userinfo(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    who = hub.principal(req)
    if who is None or who.scopes is None or "openid" not in who.scopes:
        return Response.json(
            {"error": "invalid_token", "error_description": "Send an OAuth access token granted the openid scope"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return Response.json(_user_claims(hub, who.name, sorted(who.scopes)))


def discovery(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    base = hub.public_url
    return Response.json(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/oauth/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(SCOPES),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "name", "preferred_username", "profile", "picture", "website", "orgs"],
        }
    )


def jwks(hub: LocalHub, req: Request, p: dict[str, str]) -> Response:
    return Response.json({"keys": [hub.oauth.key.jwk()]})


def routes() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/.well-known/openid-configuration", {"GET": discovery}),
        ("/oauth/jwks", {"GET": jwks}),
        ("/oauth/authorize", {"GET": authorize_get, "POST": authorize_post}),
        ("/oauth/login", {"POST": login_post}),
        ("/oauth/token", {"POST": token}),
        ("/oauth/userinfo", {"GET": userinfo, "POST": userinfo}),
    ]
