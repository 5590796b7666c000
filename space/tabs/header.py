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

    def on_load(oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
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
        first = languages[0] if languages else None
        return (
            f"<small>{line}</small>",
            gr.Dropdown(choices=languages, value=first),
            gr.Dropdown(choices=[ALL, *languages], value=first or ALL),
            gr.Dropdown(choices=[ALL, *languages], value=ALL),
            gr.Dropdown(choices=cts, value=[cts[0][1]] if cts else []),
            gr.Dropdown(choices=sfts, value=sfts[0][1] if sfts else None),
        )

    return on_load
