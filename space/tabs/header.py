"""Above the tabs: the title, the sign-in button and the status line; what a page load fills in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from registry.errors import RegistryError
from space.tabs.common import ALL, Context, token_of


def build(ctx: Context, *, title: str, intro: str) -> gr.Markdown:
    """The header; returns the status line."""
    with gr.Row(elem_id="header"):
        gr.Markdown(f"# {title}\n{intro}")
        if ctx.config.sign_in:
            gr.LoginButton(elem_id="login")
    return gr.Markdown(elem_id="status")


def load_handler(ctx: Context) -> Callable[..., tuple[Any, ...]]:
    """On load: the status line, then the language and checkpoint choices the visitor can see."""
    services, cfg = ctx.services, ctx.config

    def on_load(request: gr.Request, oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
        token = token_of(oauth_token)
        line = services.status(token)
        if not cfg.sign_in:
            line += " · sign-in is not configured here: public models only, Submit is off"
        elif token is None:
            line += " · signed out: public models only; sign in to submit and to see your private models"
        try:
            languages = services.languages(token)
            cts, sfts = services.checkpoint_choices(token)
        except RegistryError:
            languages, cts, sfts = [], [], []
        first = query_language(request, languages) or (languages[0] if languages else None)
        return (
            f"<small>{line}</small>",
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
