"""The Submit tab: a signed-in visitor hands a CT checkpoint to the bot, then follows their jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from registry.errors import RegistryError
from space.bot_client import MY_JOB_COLUMNS
from space.tabs.common import PRIVATE, Context, edge, token_of


@dataclass(frozen=True)
class SubmitTab:
    submitted: Any  # the submit event: the app chains the status line's refresh to it


def build(ctx: Context) -> SubmitTab:
    services = ctx.services
    with gr.Tab("Submit", id="submit"):
        gr.Markdown(
            "Submit a CT checkpoint: the Space checks it, then the bot merges, evaluates and publishes it. "
            "Sign in first: the bot runs the job as you, and only you see it in My jobs."
        )
        with gr.Row():
            repo = gr.Textbox(label="CT repo id (owner/name)", max_length=200, elem_id="submit-repo")
            language = gr.Textbox(label="Language, if the card has none (e.g. ben_Beng)", max_length=40)
        go = gr.Button("Check and submit", variant="primary", elem_id="submit-go")
        result = gr.Markdown(elem_id="submit-result")
        jobs = gr.Dataframe(headers=list(MY_JOB_COLUMNS), label="My jobs (refreshes every 5 s)", datatype="markdown",
                            elem_id="jobs-table")  # fmt: skip
        note = gr.Markdown(elem_id="jobs-note")
        timer = gr.Timer(5.0)

    def on_submit(ct_repo: str, language: str, oauth_token: gr.OAuthToken | None) -> str:
        answer = services.submit(ct_repo, language or None, token=token_of(oauth_token))
        return f"✅ {answer.message}" if answer.job_ids else f"❌ {answer.message}"

    def on_jobs(oauth_token: gr.OAuthToken | None) -> tuple[Any, str]:
        import pandas as pd

        token = token_of(oauth_token)
        if token is None:
            return pd.DataFrame(columns=list(MY_JOB_COLUMNS)), "Sign in to see your jobs."
        try:
            columns, rows = services.my_jobs(token)
        except RegistryError as exc:
            return gr.skip(), f"⚠ {exc}"
        return pd.DataFrame(rows, columns=columns), f"{len(rows)} of your jobs"

    submitted = go.click(edge(on_submit), [repo, language], [result], concurrency_limit=2, concurrency_id="submit",
                         **PRIVATE)  # fmt: skip
    timer.tick(on_jobs, None, [jobs, note], **PRIVATE)
    ctx.demo.load(on_jobs, None, [jobs, note], **PRIVATE)
    return SubmitTab(submitted=submitted)
