"""The Try tab: a merged model next to its CT and its SFT, streamed side by side."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from registry.catalog.entries import ModelRef
from registry.errors import RegistryError
from space.catalog_view import short_ref
from space.gpu import on_gpu
from space.tabs.common import PRIVATE, Context, edge, token_of

NOTHING_YET = (
    "**No merged model yet.** Submit a CT checkpoint (Submit tab, after signing in): the bot merges it with an "
    "SFT, evaluates and publishes it, and it appears here."
)


@dataclass(frozen=True)
class TryTab:
    language: gr.Dropdown
    merged: gr.Dropdown
    example: gr.Dropdown
    empty: gr.Markdown
    prompt: gr.Textbox
    on_language: Any  # the language handler, wrapped: the page's load event calls it too


def empty_state(language: str | None, merged: list[str], any_merge: bool) -> str:
    """The text shown instead of a model list (empty when there are models)."""
    if merged:
        return ""
    if not any_merge or not language:
        return NOTHING_YET
    return f"**No merged model for {language} yet.** Pick another language, or submit a CT checkpoint for it."


def build(ctx: Context) -> TryTab:
    services, cfg = ctx.services, ctx.config
    with gr.Tab("Try", id="try"):
        with gr.Row():
            language = gr.Dropdown(label="Language", choices=[], elem_id="try-language")
            merged = gr.Dropdown(label="Merged model", choices=[], elem_id="try-merged")
        empty = gr.Markdown(elem_id="try-empty")
        lineage = gr.Markdown(elem_id="try-lineage")
        ct_model, sft_model = gr.State(None), gr.State(None)
        example = gr.Dropdown(label="Example prompt (FLORES / SIB-200)", choices=[], elem_id="try-example")
        prompt = gr.Textbox(label="Prompt", lines=3, max_length=cfg.max_prompt_chars, elem_id="try-prompt")
        with gr.Row():
            max_new = gr.Slider(1, cfg.max_new_tokens, value=min(48, cfg.max_new_tokens), step=1,
                                label="Max new tokens")  # fmt: skip
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0: greedy)")
        generate = gr.Button("Generate", variant="primary", elem_id="try-generate")
        with gr.Row():
            out_merged = gr.Textbox(label="Merged", lines=8, elem_id="out-merged")
            out_ct = gr.Textbox(label="CT (language)", lines=8, elem_id="out-ct")
            out_sft = gr.Textbox(label="SFT (task)", lines=8, elem_id="out-sft")
        with gr.Accordion("Use this model", open=False, elem_id="try-use"):
            use_code = gr.Code(language="python", label="transformers", elem_id="try-use-code")
            use_recipe = gr.Code(language="yaml", label="The recipe that made it (registry merge)",
                                 elem_id="try-use-recipe")  # fmt: skip

    def on_language(language: str | None, oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
        token = token_of(oauth_token)
        every = services.trios(None, token)
        models = [t.merged for t in every if language in t.merge.languages] if language else []
        examples = services.examples(language)
        labels = [(short_ref(m), m) for m in models]
        return (
            gr.Dropdown(choices=labels, value=models[0] if models else None),
            gr.Dropdown(choices=examples, value=None),
            empty_state(language, models, bool(every)),
        )

    def on_merged(merged: str | None, oauth_token: gr.OAuthToken | None) -> tuple[Any, ...]:
        trio = services.trio_for(merged, token_of(oauth_token)) if merged else None
        if trio is None:
            return "", None, None, "", ""

        def link(ref: str) -> str:
            return f"[{short_ref(ref)}]({services.repo_url(ModelRef.parse(ref).repo)})"

        inputs = f" of CT {link(trio.ct)} and SFT {link(trio.sft)}" if trio.ct and trio.sft else ""
        text = f"**{trio.merge.method}** merge{inputs} → {link(trio.merged)} ({trio.merge.status})"
        code, recipe = services.use_snippet(trio.merged, token_of(oauth_token))
        return text, trio.ct, trio.sft, code, recipe

    def compare(
        merged: str | None,
        ct: str | None,
        sft: str | None,
        prompt: str,
        max_new: float,
        temperature: float,
        oauth_token: gr.OAuthToken | None,
    ) -> Iterator[tuple[str, str, str]]:
        """The merged model, its CT and its SFT answer side by side, streamed together."""
        if not merged:
            raise gr.Error("pick a language and a merged model first (none yet: see the note above)")
        token = token_of(oauth_token)
        services.check_generate(merged, prompt, max_new, temperature)
        texts = ["", "", ""]
        streams: list[Iterator[str] | None] = []
        for i, model_id in enumerate((merged, ct, sft)):
            if not model_id:
                texts[i] = "(not recorded in the catalog)"
                streams.append(None)
                continue
            streams.append(services.generate(model_id, prompt, max_new, temperature, token=token))
        while any(s is not None for s in streams):
            for i, stream in enumerate(streams):
                if stream is None:
                    continue
                try:
                    texts[i] = next(stream)
                except StopIteration:
                    streams[i] = None
                except RegistryError as exc:  # one model failing (too large, say) leaves the others
                    texts[i] = f"⚠ {exc}"
                    streams[i] = None
            yield texts[0], texts[1], texts[2]

    language_handler = edge(on_language)
    language.change(language_handler, [language], [merged, example, empty], **PRIVATE)
    merged.change(edge(on_merged), [merged], [lineage, ct_model, sft_model, use_code, use_recipe], **PRIVATE)
    example.change(lambda text: text or gr.skip(), [example], [prompt], **PRIVATE)
    generate.click(
        edge(on_gpu(compare)), [merged, ct_model, sft_model, prompt, max_new, temperature],
        [out_merged, out_ct, out_sft], concurrency_limit=cfg.generate_concurrency, concurrency_id="generate",
        **PRIVATE,
    )  # fmt: skip
    return TryTab(
        language=language, merged=merged, example=example, empty=empty, prompt=prompt, on_language=language_handler
    )
