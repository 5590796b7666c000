"""The Mergeling Space: `build_app()` returns the Gradio Blocks; `demo` is what Hugging Face Spaces runs.

Thin by design: each tab is built by its module under `space.tabs`, every event calls one
`SpaceServices` method (`space.services`, no Gradio there), errors become `gr.Error` with their
one-line message, and `space.api` names the API endpoints (`/generate`, `/leaderboard`,
`/merge_preview`, `/submit`, `/job_status`) documented in docs/space.md.

On a Space, `python space/app.py` runs this file as a script: the repository root is put on
`sys.path` first so `registry` and `space` import, and the config comes from the environment.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script (Hugging Face Spaces: `python space/app.py`)
    # The script's folder would shadow top-level modules with ours (`config`, `errors`): use the root.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

from space.config import SpaceConfig
from space.services import SpaceServices

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

TITLE = "Mergeling"
INTRO = (
    "Low-resource languages get task-solving models by **merging** a model continually pre-trained on the language "
    "(CT) with an English instruction-tuned model (SFT), with TIES or TIES-SV. Try the merged models next to their "
    "inputs, compare their scores, merge small models right here, or submit a CT checkpoint to the merge bot."
)


def build_app(config: SpaceConfig | None = None, *, services: SpaceServices | None = None) -> gr.Blocks:
    """Build the Space (nothing is read from the Hub until a page loads).

    Args:
        config: the settings (default: `SpaceConfig.from_env()`).
        services: the handlers (default: built from `config`); tests pass their own.

    Returns:
        The Blocks, queued: each endpoint has its own concurrency limit (generations
        `config.generate_concurrency`, merges 1, submissions 2), further requests wait in Gradio's queue.
    """
    import gradio as gr

    from space import api
    from space.tabs import header, leaderboard, merge, registry_tab, submit, try_tab
    from space.tabs.common import PRIVATE, Context, edge

    services = services or SpaceServices(config or SpaceConfig.from_env())
    cfg = services.config

    from space.fonts import FONTS_DIR, LAYOUT_CSS, font_css

    # The fonts are files of the app itself (space/static/fonts), served by Gradio's file route.
    gr.set_static_paths(paths=[FONTS_DIR])
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.HTML(f"<style>{font_css(f'/gradio_api/file={FONTS_DIR}/')}\n{LAYOUT_CSS}</style>", padding=False,
                elem_id="mergeling-style")  # fmt: skip
        ctx = Context(services=services, config=cfg, demo=demo)
        head = header.build(ctx, title=TITLE, intro=INTRO)
        status = head.status
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs") as tabs:
            tried = try_tab.build(ctx)
            board = leaderboard.build(ctx)
            merged = merge.build(ctx)
            submitted = submit.build(ctx)
            registry = registry_tab.build(ctx)
        # On load the first language is picked; then its merged models and the leaderboard follow from
        # that choice. Chained, not parallel: a leaderboard computed from the pre-load "(all)" and
        # arriving last would overwrite the language's plots.
        outputs = [status, tried.language, board.language, registry.language, merged.ct, merged.sft]
        demo.load(edge(header.load_handler(ctx)), None, outputs, **PRIVATE).then(
            tried.on_language, [tried.language], [tried.merged, tried.example, tried.empty], **PRIVATE
        ).then(edge(header.query_handler(ctx)), [tried.merged], [tried.merged, tried.prompt], **PRIVATE).then(
            board.refresh, board.inputs, board.outputs, **PRIVATE
        )
        # The status line's counts follow the catalog and the bot without a reload: on a timer, on a
        # tab change and after a submission (one shared concurrency slot: a cheap, cached read).
        refresh: dict[str, Any] = {"concurrency_limit": 4, "concurrency_id": "status", "show_progress": "hidden"}
        on_status = header.status_handler(ctx)
        head.timer.tick(on_status, None, [status], **refresh, **PRIVATE)
        tabs.select(on_status, None, [status], **refresh, **PRIVATE)
        submitted.submitted.then(on_status, None, [status], **refresh, **PRIVATE)
        merged.handed.then(on_status, None, [status], **refresh, **PRIVATE)
        # The URL follows the visitor (shareable), and a shared URL opens the same view.
        demo.load(None, None, None, js=header.URL_TO_TAB_JS)
        tabs.select(None, None, None, js=header.TAB_TO_URL_JS)
        tried.language.change(None, [tried.language], None, js=header.url_param_js("lang"))
        tried.merged.change(None, [tried.merged], None, js=header.url_param_js("model"))
        tried.prompt.blur(None, [tried.prompt], None, js=header.url_param_js("prompt"))
        api.register(ctx)

    demo.queue(default_concurrency_limit=4, max_size=64)
    blocks: gr.Blocks = demo
    return blocks


@functools.cache
def _default_app() -> gr.Blocks:
    return build_app()


def __getattr__(name: str) -> Any:
    # `demo` is built on first access (once), so importing this module (tests, the CLI) builds
    # nothing; Hugging Face Spaces and `gradio space/app.py` look it up by name.
    if name == "demo":
        return _default_app()
    raise AttributeError(name)


if __name__ == "__main__":
    _default_app().launch()
