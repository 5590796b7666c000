"""The Merge tab: a lab-size merge run here by the engine, with its per-layer diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from space.catalog_view import short_ref
from space.frames import LAYER_COLUMNS, LAYER_STATS
from space.frames import frame as _frame
from space.frames import seeded as _seeded
from space.merge_preview import RUN_COLUMNS, run_row
from space.tabs.common import PRIVATE, Context, edge, token_of


@dataclass(frozen=True)
class MergeTab:
    ct: gr.Dropdown
    sft: gr.Dropdown
    handed: Any  # the "Hand to the bot" event: the app chains the status line's refresh to it


def build(ctx: Context) -> MergeTab:
    services, cfg = ctx.services, ctx.config
    infos = {m.name: m for m in services.method_infos()}
    methods = list(infos)
    first = "ties_sv" if "ties_sv" in methods else methods[0]
    with gr.Tab("Merge", id="merge"):
        gr.Markdown(
            f"Merge a CT and an SFT checkpoint of the catalog **here** (models up to "
            f"{cfg.merge_max_parameters / 1e6:.0f} M parameters, on CPU). Bigger ones, or to publish, go to the bot."
        )
        with gr.Row():
            ct = gr.Dropdown(label="CT checkpoint (several: a group merge)", choices=[], multiselect=True,
                             elem_id="merge-ct")  # fmt: skip
            sft = gr.Dropdown(label="SFT checkpoint", choices=[], elem_id="merge-sft")
        with gr.Row():
            method = gr.Radio(methods, value=first, label="Method", elem_id="merge-method")
            density = gr.Slider(0.05, 1.0, value=0.2, step=0.05, label="Density (kept fraction)",
                                visible=infos[first].uses_density, elem_id="merge-density")  # fmt: skip
            slack = gr.Slider(0.0, 1.0, value=0.1, step=0.05, label="Slack (TIES-SV)",
                              visible=infos[first].uses_slack, elem_id="merge-slack")  # fmt: skip
        with gr.Row():
            ct_weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="CT weight", elem_id="merge-ct-weight")
            sft_weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="SFT weight", elem_id="merge-sft-weight")
        prompt = gr.Textbox(label="Prompt for the merged model (optional)", max_length=cfg.max_prompt_chars,
                            elem_id="merge-prompt")  # fmt: skip
        with gr.Row():
            go = gr.Button("Merge here", variant="primary", elem_id="merge-go")
            to_bot = gr.Button("Hand to the bot (merge, evaluate, publish)", elem_id="merge-bot")
        gr.Markdown(
            "<small>The bot merges each chosen CT with the recipe above (method, density, slack, weights) on its "
            "pinned CT, SFT and base, then evaluates and publishes it as you: sign in first.</small>"
        )
        summary = gr.Textbox(label="Diagnostics", lines=7, elem_id="merge-summary")
        gr.Markdown(
            "<small>Per layer, as a share of its parameters: **sign conflicts** (the inputs' task vectors point "
            "opposite ways), **SFT discarded** (SFT values TIES drops on a conflict), **rescued by slack** (those "
            "TIES-SV keeps). The axis is fixed at 0-100 % so runs compare.</small>"
        )
        layers = gr.BarPlot(_seeded(LAYER_COLUMNS, "stat", list(LAYER_STATS)), x="layer", y="share", color="stat",
                            title="Per layer: share of parameters", x_label_angle=-30, height=380, y_lim=[0, 1],
                            elem_id="merge-layers")  # fmt: skip
        answer = gr.Textbox(label="The merged model's answer", elem_id="merge-answer")
        history = gr.Dataframe(headers=list(RUN_COLUMNS), label="This session's runs, side by side (% of all merged parameters)",
                               elem_id="merge-history")  # fmt: skip
        runs = gr.State([])
        handed = gr.Markdown(elem_id="merge-handed")

    def on_method(name: str) -> tuple[Any, Any]:
        info = infos.get(name)
        return gr.Slider(visible=bool(info and info.uses_density)), gr.Slider(visible=bool(info and info.uses_slack))

    def on_merge(
        ct_id: list[str], sft_id: str, method: str, density: float, slack: float, ct_w: float, sft_w: float,
        prompt: str, done: list[dict[str, Any]], oauth_token: gr.OAuthToken | None,
    ) -> tuple[Any, ...]:  # fmt: skip
        import pandas as pd

        result = services.merge_preview(ct_id, sft_id, method, density, slack, ct_w, sft_w,
                                        token=token_of(oauth_token))  # fmt: skip
        text = ""
        if prompt and prompt.strip():
            text = services.generate_local(result.out, prompt, max_new_tokens=32)
        rows = [row for row in result.layers if row["stat"] in LAYER_STATS]
        info = infos.get(method)
        view = services.visible_view(token_of(oauth_token))
        found = [view.find_checkpoint(str(c)) for c in (ct_id if isinstance(ct_id, list) else [ct_id])]
        names = ", ".join(short_ref(f"{e.repo}@{e.revision}" if e.revision else e.repo) for e in found if e is not None)
        done = [*done, run_row(len(done) + 1, result, method=method, cts=names, weights=(ct_w, sft_w),
                               density=density if info and info.uses_density else float("nan"),
                               slack=slack if info and info.uses_slack else float("nan"))][-20:]  # fmt: skip
        summary = f"{result.summary}\n\nmerged in {result.seconds:.1f} s"
        return summary, _frame(rows, LAYER_COLUMNS), text, pd.DataFrame(done, columns=list(RUN_COLUMNS)), done

    def on_hand_over(
        ct_ids: list[str], sft_id: str, method: str, density: float, slack: float, ct_w: float, sft_w: float,
        oauth_token: gr.OAuthToken | None,
    ) -> str:  # fmt: skip
        answers = services.hand_to_bot(ct_ids, sft_id, method, density, slack, ct_w, sft_w,
                                       token=token_of(oauth_token))  # fmt: skip
        return "\n\n".join(f"{'✅' if a.job_ids else '❌'} {a.message}" for a in answers)

    method.change(on_method, [method], [density, slack], **PRIVATE)
    go.click(
        edge(on_merge), [ct, sft, method, density, slack, ct_weight, sft_weight, prompt, runs],
        [summary, layers, answer, history, runs],
        concurrency_limit=1, concurrency_id="merge", **PRIVATE,
    )  # fmt: skip
    handed_event = to_bot.click(edge(on_hand_over), [ct, sft, method, density, slack, ct_weight, sft_weight],
                                [handed], concurrency_limit=2, concurrency_id="submit", **PRIVATE)  # fmt: skip
    return MergeTab(ct=ct, sft=sft, handed=handed_event)
