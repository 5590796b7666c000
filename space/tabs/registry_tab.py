"""The Registry tab: every entry the visitor can read, with lineage and revisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from space.frames import REGISTRY_COLUMNS
from space.frames import frame as _frame
from space.tabs.common import ALL, PRIVATE, Context, choice, edge, token_of


@dataclass(frozen=True)
class RegistryTab:
    language: gr.Dropdown


def build(ctx: Context) -> RegistryTab:
    services = ctx.services
    with gr.Tab("Registry", id="registry"):
        with gr.Row():
            language = gr.Dropdown(label="Language", choices=[ALL], value=ALL, elem_id="registry-language")
            refresh = gr.Button("Refresh")
        table = gr.Dataframe(label="CT / SFT / merges with lineage and revisions", wrap=True, elem_id="registry-table")

    def on_registry(language: str | None, oauth_token: gr.OAuthToken | None) -> Any:
        return _frame(services.registry_rows(choice(language), token_of(oauth_token)), REGISTRY_COLUMNS)

    for trigger in (language.change, refresh.click, ctx.demo.load):
        trigger(edge(on_registry), [language], [table], **PRIVATE)
    return RegistryTab(language=language)
