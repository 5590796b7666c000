"""The Space's named API (`gradio_client`: positional arguments in the order below; docs/space.md).

Every endpoint checks its arguments (`space.inputs`) before any work and answers errors as one
line. A caller acts as themselves: `Client(url, oauth_token=...)` passes their Hub token to the
endpoints that take one; without it they are anonymous and see public models only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.events import api

from space.gpu import on_gpu
from space.tabs.common import Context, choice, edge, token_of


def register(ctx: Context) -> None:
    """Add `/generate`, `/leaderboard`, `/merge_preview`, `/submit`, `/job_status` to the open Blocks."""
    services, cfg = ctx.services, ctx.config

    def generate(
        model_id: str, prompt: str, max_new_tokens: int, temperature: float = 0.0,
        oauth_token: gr.OAuthToken | None = None,
    ) -> Iterator[str]:  # fmt: skip
        """Stream a model's answer. Args: model_id (owner/name[@revision]), prompt, max_new_tokens,
        temperature (0: greedy)."""
        yield from services.generate(model_id, prompt, max_new_tokens, temperature, token=token_of(oauth_token))

    def leaderboard(language: str, oauth_token: gr.OAuthToken | None = None) -> list[dict[str, Any]]:
        """Leaderboard rows for a language ('' or '(all)': every model), one column per task metric."""
        return services.leaderboard(choice(language), token=token_of(oauth_token))

    def merge_preview(
        ct_id: str, sft_id: str, method: str, density: float, slack: float, ct_weight: float = 1.0,
        sft_weight: float = 1.0, oauth_token: gr.OAuthToken | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Merge a catalog CT (several, comma-separated: a group) and an SFT here (lab-size models only).
        Returns what the page shows: summary, totals, per-layer rows (layer, stat, share, count), seconds."""
        result = services.merge_preview(ct_id, sft_id, method, density, slack, ct_weight, sft_weight,
                                        token=token_of(oauth_token))  # fmt: skip
        return {"summary": result.summary, "totals": result.totals, "layers": result.layers, "seconds": result.seconds}

    def submit(ct_repo_id: str, language: str, oauth_token: gr.OAuthToken | None = None) -> dict[str, Any]:
        """Check a CT repo and enqueue its merges with the bot as the caller (needs their token)."""
        return services.submit(ct_repo_id, choice(language), token=token_of(oauth_token)).as_dict()

    def job_status(job_id: str) -> str:
        """The state of a bot job."""
        return services.job_status(job_id)

    api(edge(on_gpu(generate)), api_name="generate", concurrency_limit=cfg.generate_concurrency,
        concurrency_id="generate")  # fmt: skip
    api(edge(leaderboard), api_name="leaderboard", concurrency_limit=4, concurrency_id="board")
    api(edge(merge_preview), api_name="merge_preview", concurrency_limit=1, concurrency_id="merge")
    api(edge(submit), api_name="submit", concurrency_limit=2, concurrency_id="submit")
    api(edge(job_status), api_name="job_status", concurrency_limit=4, concurrency_id="jobs")
