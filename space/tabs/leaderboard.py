"""The Leaderboard tab: the catalog's models and their eval results, searchable, sortable, plotted."""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from space.frames import BAR_COLUMNS, BAR_MODELS, SCATTER_COLUMNS
from space.frames import frame as _frame
from space.frames import link_rows as _link_rows
from space.frames import seeded as _seeded
from space.leaderboard import short_header
from space.tabs.common import ALL, PRIVATE, Context, choice, edge, token_of

_FIXED = ("model", "role", "languages", "method", "revision")


@dataclass(frozen=True)
class LeaderboardTab:
    language: gr.Dropdown
    inputs: list[Any]
    outputs: list[Any]
    refresh: Any


def write_csv(rows: list[dict[str, Any]], folder: Path) -> Path:
    """The rows shown, as a CSV file (one per call, in `folder`)."""
    handle = tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="leaderboard-", dir=folder, delete=False,
                                         newline="", encoding="utf-8")  # fmt: skip
    with handle:
        columns = list(rows[0]) if rows else list(_FIXED)
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(handle.name)


def build(ctx: Context) -> LeaderboardTab:
    services = ctx.services
    methods = services.methods()
    with gr.Tab("Leaderboard", id="leaderboard", elem_id="tab-leaderboard"):
        with gr.Row():
            language = gr.Dropdown(label="Language", choices=[ALL], value=ALL, elem_id="lb-language")
            method = gr.Dropdown(label="Method", choices=[ALL], value=ALL, elem_id="lb-method")
            search = gr.Textbox(label="Search models", placeholder="type to filter", elem_id="lb-search")
            sort = gr.Dropdown(label="Sort by", choices=[ALL], value=ALL, elem_id="lb-sort")
        board = gr.Dataframe(label="Models and their eval results", datatype="markdown", wrap=False,
                             elem_id="leaderboard-table")  # fmt: skip
        legend = gr.Markdown(elem_id="leaderboard-legend")
        download = gr.DownloadButton("Download CSV (what is shown)", elem_id="leaderboard-csv")
        with gr.Row():
            bars = gr.BarPlot(_seeded(BAR_COLUMNS, "model", list(BAR_MODELS)), x="bar", y="relative", color="model",
                              title="Per metric, ÷ its largest (bpb: lower is better)",
                              x_label_angle=-30, y_title="relative to the largest (hover: value)",
                              tooltip=["repo", "metric", "value"], elem_id="leaderboard-bars")  # fmt: skip
            scatter = gr.ScatterPlot(_seeded(SCATTER_COLUMNS, "method", methods), x="language gain kept",
                                     y="task gain kept", color="method",
                                     title="Gain kept (1 = the better input)",
                                     elem_id="leaderboard-scatter")  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="mergeling-csv-"))

    def on_leaderboard(
        language: str | None, method: str | None, search: str, sort_by: str | None, oauth_token: gr.OAuthToken | None
    ) -> tuple[Any, ...]:
        token = token_of(oauth_token)
        state = services.board(choice(language), choice(method), search, choice(sort_by), token=token)
        bars, scatter = services.plots(choice(language), token)
        if state.rows:
            shown = _link_rows(state.rows)
            full = [c for c in shown.columns if short_header(c) != c]
            shown = shown.rename(columns={c: short_header(c) for c in full})
            legend = "<small>" + " · ".join(f"**{short_header(c)}**: {c}" for c in full)
            legend += (
                " · `*`: a `--limit` run (partial data)</small>" if any("--limit" in c for c in full) else "</small>"
            )
        else:
            import pandas as pd

            shown, legend = pd.DataFrame([{"model": state.empty_text, "role": ""}]), ""
        failed = services.failed_merges(token)
        if failed:
            legend += (
                "\n\n<small>Failed merge jobs (no model): "
                + "; ".join(
                    f"{f['output']} ({f['method']}, {f['languages']}): {f['error'] or 'no error recorded'}"
                    for f in failed
                )
                + "</small>"
            )
        return (
            shown,
            _frame(bars, BAR_COLUMNS),
            _frame(scatter, SCATTER_COLUMNS),
            gr.Dropdown(choices=[ALL, *state.sort_choices], value=state.sort_by or ALL),
            gr.Dropdown(choices=[ALL, *state.method_choices], value=state.method or ALL),
            write_csv(state.rows, folder),
            legend,
        )

    inputs = [language, method, search, sort]
    outputs = [board, bars, scatter, sort, method, download, legend]
    handler = edge(on_leaderboard)
    for trigger in (language.change, method.input, sort.input):
        trigger(handler, inputs, outputs, concurrency_limit=4, concurrency_id="board", **PRIVATE)
    search.input(handler, inputs, outputs, concurrency_limit=4, concurrency_id="board", trigger_mode="always_last",
                 show_progress="hidden", **PRIVATE)  # fmt: skip
    return LeaderboardTab(language=language, inputs=inputs, outputs=outputs, refresh=handler)
