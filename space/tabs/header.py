"""Above the tabs: the title, the sign-in button and the status line; what a page load fills in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from registry.errors import RegistryError
from space.tabs.common import ALL, Context, token_of


@dataclass(frozen=True)
class Header:
    status: gr.Markdown
    timer: gr.Timer  # ticks every `config.status_every_s`: the status line refreshes


def build(ctx: Context, *, title: str, intro: str) -> Header:
    """The header: title, sign-in, the status line and its refresh timer."""
    with gr.Row(elem_id="header"):
        gr.Markdown(f"# {title}\n{intro}")
        if ctx.config.sign_in:
            gr.LoginButton(elem_id="login")
    return Header(status=gr.Markdown(elem_id="status"), timer=gr.Timer(ctx.config.status_every_s))


def status_line(ctx: Context, token: str | None) -> str:
    """The status line for a visitor: Hub, registry counts (what they can read), the bot's jobs, sign-in."""
    line = ctx.services.status(token)
    if not ctx.config.sign_in:
        line += " · sign-in is not configured here: public models only, Submit is off"
    elif token is None:
        line += " · signed out: public models only; sign in to submit and to see your private models"
    return f"<small>{line}</small>"


def status_handler(ctx: Context) -> Callable[[gr.OAuthToken | None], str]:
    """The status line again (on the timer, a tab change, after a submission); never raises."""

    def on_refresh(oauth_token: gr.OAuthToken | None) -> str:
        return status_line(ctx, token_of(oauth_token))

    return on_refresh


def load_handler(ctx: Context) -> Callable[..., tuple[Any, ...]]:
    """On load: the status line, then the language and checkpoint choices the visitor can see."""
    services = ctx.services

    def on_load(request: gr.Request, oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
        token = token_of(oauth_token)
        line = status_line(ctx, token)
        try:
            languages = services.languages(token)
            cts, sfts = services.checkpoint_choices(token)
        except RegistryError:
            languages, cts, sfts = [], [], []
        first = query_language(request, languages) or (languages[0] if languages else None)
        return (
            line,
            gr.Dropdown(choices=languages, value=first),
            gr.Dropdown(choices=[ALL, *languages], value=first or ALL),
            gr.Dropdown(choices=[ALL, *languages], value=ALL),
            gr.Dropdown(choices=cts, value=[cts[0][1]] if cts else []),
            gr.Dropdown(choices=sfts, value=sfts[0][1] if sfts else None),
        )

    return on_load


TAB_IDS = ("try", "leaderboard", "merge", "submit", "registry")

# Client-side only (no server round trip): keep `?tab=&lang=&model=&prompt=` in the address bar as
# the visitor moves, so the URL can be shared; `#leaderboard` works as `?tab=leaderboard`.
URL_PARAM_JS = """(value) => {{
  const url = new URL(window.location.href);
  const text = Array.isArray(value) ? value.join(",") : (value ?? "");
  if (text) url.searchParams.set("{param}", String(text).slice(0, {limit})); else url.searchParams.delete("{param}");
  window.history.replaceState(null, "", url);
}}"""
TAB_TO_URL_JS = """() => setTimeout(() => {
  const tab = document.querySelector("#tabs [role=tab][aria-selected=true]");
  if (!tab) return;
  const url = new URL(window.location.href);
  url.searchParams.set("tab", tab.dataset.tabId || tab.textContent.trim().toLowerCase());
  url.hash = "";
  window.history.replaceState(null, "", url);
}, 0)"""
URL_TO_TAB_JS = """() => {
  const url = new URL(window.location.href);
  const wanted = (url.searchParams.get("tab") || url.hash.slice(1) || "").toLowerCase();
  if (!wanted) return;
  const pick = () => {
    const tab = [...document.querySelectorAll("#tabs [role=tab]")].find(b => (b.dataset.tabId || "") === wanted);
    if (tab) tab.click(); else setTimeout(pick, 100);
  };
  pick();
}"""


def url_param_js(param: str, *, limit: int = 500) -> str:
    """A JS event handler writing its input value to `?param=` (cut at `limit` characters)."""
    return URL_PARAM_JS.format(param=param, limit=limit)


def query_handler(ctx: Context) -> Callable[..., tuple[Any, ...]]:
    """After the load chain: the model and prompt the URL asks for (`?model=`, `?prompt=`), if the
    visitor can see that model; otherwise the choices stay as they are."""
    services, cfg = ctx.services, ctx.config

    def from_query(merged: str | None, request: gr.Request, oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
        params = request.query_params if request is not None else {}
        wanted = str(params.get("model") or "")
        prompt = str(params.get("prompt") or "")[: cfg.max_prompt_chars]
        model: Any = gr.skip()
        if wanted and wanted != merged:
            trio = services.trio_for(wanted, token_of(oauth_token))
            if trio is not None:
                model = trio.merged
        return model, (prompt if prompt else gr.skip())

    return from_query


def query_language(request: gr.Request | None, languages: list[str]) -> str | None:
    """`?lang=` when it is one of `languages`."""
    wanted = str(request.query_params.get("lang") or "") if request is not None else ""
    return wanted if wanted in languages else None
