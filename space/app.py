"""The Mergeling Space: `build_app()` returns the Gradio Blocks; `demo` is what Hugging Face Spaces runs.

Thin by design: every event calls one `SpaceServices` method (`space.services`) and this module
only lays out components, turns our errors into `gr.Error` (their one-line message, never a bare
red "Error") and names the API endpoints (`/generate`, `/leaderboard`, `/merge_preview`, `/submit`,
`/job_status`) with the signatures documented in docs/space.md.

On a Space, `python space/app.py` runs this file as a script: the repository root is put on
`sys.path` first so `registry` and `space` import, and the config comes from the environment.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script (Hugging Face Spaces: `python space/app.py`)
    # The script's folder would shadow top-level modules with ours (`config`, `errors`): use the root.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

from registry.errors import RegistryError
from space.config import SpaceConfig
from space.frames import (
    BAR_COLUMNS,
    BAR_MODELS,
    LAYER_COLUMNS,
    LAYER_STATS,
    REGISTRY_COLUMNS,
    SCATTER_COLUMNS,
)
from space.frames import frame as _frame
from space.frames import link_rows as _link_rows
from space.frames import seeded as _seeded
from space.gpu import on_gpu
from space.services import SpaceServices

if TYPE_CHECKING:
    import gradio as gr
    import pandas as pd

logger = logging.getLogger(__name__)

TITLE = "Mergeling"
INTRO = (
    "Low-resource languages get task-solving models by **merging** a model continually pre-trained on the language "
    "(CT) with an English instruction-tuned model (SFT), with TIES or TIES-SV. Try the merged models next to their "
    "inputs, compare their scores, merge small models right here, or submit a CT checkpoint to the merge bot."
)
ALL = "(all)"


def _error(exc: BaseException) -> Exception:
    """A `gr.Error` with our one-line message (unexpected errors are logged with their traceback)."""
    import gradio as gr

    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, RegistryError):
        return gr.Error(str(exc), print_exception=False)
    logger.exception("unexpected error in a Space handler")
    return gr.Error(f"unexpected error ({type(exc).__name__}: {exc}); the Space's log has the details")


def _edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler, raising errors as `gr.Error` (generators too, at any yield)."""
    import inspect

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 (shown to the user as one line)
                raise _error(exc) from exc

        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (shown to the user as one line)
            raise _error(exc) from exc

    return call


def _choice(value: Any) -> str | None:
    return None if value in (None, "", ALL) else str(value)


def build_app(config: SpaceConfig | None = None, *, services: SpaceServices | None = None) -> gr.Blocks:
    """Build the Space (nothing is read from the Hub until a page loads).

    Args:
        config: the settings (default: `SpaceConfig.from_env()`).
        services: the handlers (default: built from `config`); tests pass their own.

    Returns:
        The Blocks, queued: generations and merges run at most `config.generate_concurrency` / 1 at
        a time, further requests wait in Gradio's queue.
    """
    import gradio as gr
    from gradio.events import api

    services = services or SpaceServices(config or SpaceConfig.from_env())
    cfg = services.config
    methods = services.methods()

    # -- handlers (thin: one services call each) ------------------------------------------------
    def api_generate(model_id: str, prompt: str, max_new_tokens: int) -> Iterator[str]:
        """Stream a model's greedy answer. Args: model_id (owner/name[@revision]), prompt, max_new_tokens."""
        yield from services.generate(model_id, prompt, max_new_tokens)

    def api_leaderboard(language: str) -> list[dict[str, Any]]:
        """Leaderboard rows for a language ('' or '(all)': every model), one column per task metric."""
        return services.leaderboard(_choice(language))

    def api_merge_preview(ct_id: str, sft_id: str, method: str, density: float, slack: float) -> str:
        """Merge a catalog CT (several, comma-separated: a group) and an SFT here (lab-size models only);
        returns the diagnostics summary."""
        return services.merge_preview(ct_id, sft_id, method, density, slack).summary

    def api_submit(ct_repo_id: str, language: str) -> dict[str, Any]:
        """Check a CT repo and enqueue its merges with the bot: job ids, or every reason it cannot be merged."""
        return services.submit(ct_repo_id, _choice(language)).as_dict()

    def api_job_status(job_id: str) -> str:
        """The state of a bot job."""
        return services.job_status(job_id)

    def on_load() -> tuple[Any, ...]:
        status = services.status()
        try:
            languages = services.languages()
            cts, sfts = services.checkpoint_choices()
        except RegistryError:
            languages, cts, sfts = [], [], []
        first = languages[0] if languages else None
        return (
            f"<small>{status}</small>",
            gr.Dropdown(choices=languages, value=first),
            gr.Dropdown(choices=[ALL, *languages], value=first or ALL),
            gr.Dropdown(choices=[ALL, *languages], value=ALL),
            gr.Dropdown(choices=cts, value=cts[:1]),
            gr.Dropdown(choices=sfts, value=sfts[0] if sfts else None),
        )

    def on_language(language: str | None) -> tuple[Any, ...]:
        trios = services.trios(language) if language else []
        merged = [t.merged for t in trios]
        examples = services.examples(language)
        return (
            gr.Dropdown(choices=merged, value=merged[0] if merged else None),
            gr.Dropdown(choices=examples, value=None),
            "" if merged else f"No merged model for {language} yet: submit a CT checkpoint to the bot.",
        )

    def on_merged(merged: str | None) -> tuple[Any, ...]:
        trio = services.trio_for(merged) if merged else None
        if trio is None:
            return "", None, None
        text = (
            f"**{trio.merge.method}** merge of CT `{trio.ct}` and SFT `{trio.sft}` "
            f"→ `{trio.merged}` ({trio.merge.status})"
        )
        return text, trio.ct, trio.sft

    def compare(
        merged: str | None, ct: str | None, sft: str | None, prompt: str, max_new: float, temperature: float
    ) -> Iterator[tuple[str, str, str]]:
        """The merged model, its CT and its SFT answer side by side, streamed together."""
        if not merged:
            raise gr.Error("pick a language and a merged model first")
        if not prompt or not prompt.strip():
            raise gr.Error("the prompt is empty: type some text, or pick an example")
        texts = ["", "", ""]
        streams: list[Iterator[str] | None] = []
        for i, model_id in enumerate((merged, ct, sft)):
            if not model_id:
                texts[i] = "(not recorded in the catalog)"
                streams.append(None)
                continue
            streams.append(services.generate(model_id, prompt, int(max_new), temperature))
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

    def on_leaderboard(language: str | None, method: str | None, search: str, sort_by: str | None) -> tuple[Any, ...]:
        rows = services.leaderboard(_choice(language), _choice(method), search, _choice(sort_by))
        bars, scatter = services.plots(_choice(language))
        columns = list(rows[0]) if rows else []
        return (
            _link_rows(rows),
            _frame(bars, BAR_COLUMNS),
            _frame(scatter, SCATTER_COLUMNS),
            gr.Dropdown(choices=[ALL, *[c for c in columns if c not in ("link",)]], value=sort_by or ALL),
            gr.Dropdown(choices=[ALL, *services.view().methods()], value=method or ALL),
        )

    def on_merge(
        ct_id: list[str], sft_id: str, method: str, density: float, slack: float, prompt: str
    ) -> tuple[str, pd.DataFrame, str]:
        result = services.merge_preview(ct_id, sft_id, method, density, slack)
        answer = ""
        if prompt and prompt.strip():
            answer = services.generate_local(result.out, prompt, max_new_tokens=32)
        summary = f"{result.summary}\n\nmerged in {result.seconds:.1f} s"
        layers = [row for row in result.layers if row["stat"] in LAYER_STATS]
        return summary, _frame(layers, LAYER_COLUMNS), answer

    def on_hand_over(ct_ids: list[str]) -> str:
        messages = []
        for ct_id in ct_ids or []:
            entry = services.view().find_checkpoint(ct_id)
            if entry is None:
                raise gr.Error(f"no CT checkpoint {ct_id!r} in the registry")
            messages.append(services.submit(entry.repo, getattr(entry, "language", None)).message)
        return "\n\n".join(messages) or "pick a CT checkpoint first"

    def on_submit(ct_repo: str, language: str) -> str:
        result = services.submit(ct_repo, _choice(language))
        if result.job_ids:
            return f"✅ {result.message}"
        return f"❌ {result.message}"

    def on_jobs() -> tuple[Any, str]:
        import pandas as pd

        try:
            columns, rows = services.jobs()
        except RegistryError as exc:
            return gr.skip(), f"⚠ {exc}"
        return pd.DataFrame(rows, columns=columns), f"{len(rows)} jobs"

    def on_job_status(job_id: str) -> str:
        return services.job_status(job_id)

    def on_registry(language: str | None) -> pd.DataFrame:
        return _frame(services.registry_rows(_choice(language)), REGISTRY_COLUMNS)

    # -- layout ---------------------------------------------------------------------------------
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        status = gr.Markdown(elem_id="status")
        with gr.Tabs():
            with gr.Tab("Try", id="try"):
                with gr.Row():
                    language = gr.Dropdown(label="Language", choices=[], elem_id="try-language")
                    merged = gr.Dropdown(label="Merged model", choices=[], elem_id="try-merged")
                lineage = gr.Markdown()
                ct_model, sft_model = gr.State(None), gr.State(None)
                example = gr.Dropdown(label="Example prompt (FLORES / SIB-200)", choices=[], elem_id="try-example")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="try-prompt")
                with gr.Row():
                    max_new = gr.Slider(1, cfg.max_new_tokens, value=min(48, cfg.max_new_tokens), step=1,
                                        label="Max new tokens")  # fmt: skip
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0: greedy)")
                generate = gr.Button("Generate", variant="primary", elem_id="try-generate")
                with gr.Row():
                    out_merged = gr.Textbox(label="Merged", lines=8, elem_id="out-merged")
                    out_ct = gr.Textbox(label="CT (language)", lines=8, elem_id="out-ct")
                    out_sft = gr.Textbox(label="SFT (task)", lines=8, elem_id="out-sft")
            with gr.Tab("Leaderboard", id="leaderboard", elem_id="tab-leaderboard"):
                with gr.Row():
                    lb_language = gr.Dropdown(label="Language", choices=[ALL], value=ALL)
                    lb_method = gr.Dropdown(label="Method", choices=[ALL], value=ALL)
                    lb_search = gr.Textbox(label="Search models")
                    lb_sort = gr.Dropdown(label="Sort by", choices=[ALL], value=ALL)
                board = gr.Dataframe(label="Models and their eval results", datatype="markdown", wrap=True,
                                     elem_id="leaderboard-table")  # fmt: skip
                with gr.Row():
                    bars = gr.BarPlot(_seeded(BAR_COLUMNS, "model", list(BAR_MODELS)), x="bar", y="value", color="model",
                                      title="CT / SFT / merged per metric (pick a language)", x_label_angle=-30,
                                      elem_id="leaderboard-bars")  # fmt: skip
                    scatter = gr.ScatterPlot(_seeded(SCATTER_COLUMNS, "method", methods), x="language gain kept", y="task gain kept",
                                             color="method", title="Gain kept per merge (1 = as good as the better input)",
                                             elem_id="leaderboard-scatter")  # fmt: skip
            with gr.Tab("Merge", id="merge"):
                gr.Markdown(
                    f"Merge a CT and an SFT checkpoint of the catalog **here** (models up to "
                    f"{cfg.merge_max_parameters / 1e6:.0f} M parameters, on CPU). Bigger ones, or to publish, go to "
                    "the bot."
                )
                with gr.Row():
                    m_ct = gr.Dropdown(label="CT checkpoint (several: a group merge)", choices=[], multiselect=True,
                                       elem_id="merge-ct")  # fmt: skip
                    m_sft = gr.Dropdown(label="SFT checkpoint", choices=[], elem_id="merge-sft")
                with gr.Row():
                    m_method = gr.Radio(methods, value="ties_sv" if "ties_sv" in methods else methods[0],
                                        label="Method")  # fmt: skip
                    m_density = gr.Slider(0.05, 1.0, value=0.2, step=0.05, label="Density (kept fraction)")
                    m_slack = gr.Slider(0.0, 1.0, value=0.1, step=0.05, label="Slack (TIES-SV)")
                m_prompt = gr.Textbox(label="Prompt for the merged model (optional)", elem_id="merge-prompt")
                with gr.Row():
                    m_go = gr.Button("Merge here", variant="primary", elem_id="merge-go")
                    m_bot = gr.Button("Hand to the bot (merge, evaluate, publish)")
                m_summary = gr.Textbox(label="Diagnostics", lines=7, elem_id="merge-summary")
                m_layers = gr.BarPlot(_seeded(LAYER_COLUMNS, "stat", list(LAYER_STATS)), x="layer", y="share", color="stat",
                                      title="Per layer: share of parameters", x_label_angle=-30, height=380,
                                      elem_id="merge-layers")  # fmt: skip
                m_answer = gr.Textbox(label="The merged model's answer", elem_id="merge-answer")
                m_handed = gr.Markdown()
            with gr.Tab("Submit", id="submit"):
                gr.Markdown(
                    "Submit a CT checkpoint: the Space checks it, then the bot merges, evaluates and publishes."
                )
                with gr.Row():
                    s_repo = gr.Textbox(label="CT repo id (owner/name)", elem_id="submit-repo")
                    s_language = gr.Textbox(label="Language, if the card has none (e.g. ben_Beng)")
                s_go = gr.Button("Check and submit", variant="primary")
                s_result = gr.Markdown(elem_id="submit-result")
                with gr.Row():
                    j_id = gr.Textbox(label="Job id")
                    j_go = gr.Button("Status")
                    j_state = gr.Textbox(label="State")
                j_note = gr.Markdown()
                jobs = gr.Dataframe(label="Bot jobs (refreshes every 5 s)", elem_id="jobs-table")
                timer = gr.Timer(5.0)
            with gr.Tab("Registry", id="registry"):
                with gr.Row():
                    r_language = gr.Dropdown(label="Language", choices=[ALL], value=ALL)
                    r_refresh = gr.Button("Refresh")
                r_table = gr.Dataframe(
                    label="CT / SFT / merges with lineage and revisions", wrap=True, elem_id="registry-table"
                )

        # -- events (UI only: private; the named API endpoints are below) --------------------------
        private: dict[str, Any] = {"api_visibility": "private"}
        generation: dict[str, Any] = {"concurrency_limit": cfg.generate_concurrency, "concurrency_id": "generate"}
        board_inputs = [lb_language, lb_method, lb_search, lb_sort]
        board_outputs = [board, bars, scatter, lb_sort, lb_method]
        # On load the first language is picked; then its merged models and the leaderboard follow from
        # that choice. Chained, not parallel: a leaderboard computed from the pre-load "(all)" and
        # arriving last would overwrite the language's plots.
        demo.load(_edge(on_load), outputs=[status, language, lb_language, r_language, m_ct, m_sft], **private).then(
            _edge(on_language), [language], [merged, example, lineage], **private
        ).then(_edge(on_leaderboard), board_inputs, board_outputs, **private)
        language.change(_edge(on_language), [language], [merged, example, lineage], **private)
        merged.change(_edge(on_merged), [merged], [lineage, ct_model, sft_model], **private)
        example.change(lambda text: text or gr.skip(), [example], [prompt], **private)
        generate.click(
            _edge(on_gpu(compare)), [merged, ct_model, sft_model, prompt, max_new, temperature],
            [out_merged, out_ct, out_sft], **private, **generation,
        )  # fmt: skip
        for trigger in (lb_language.change, lb_method.input, lb_search.submit, lb_sort.input):
            trigger(_edge(on_leaderboard), board_inputs, board_outputs, **private)
        m_go.click(
            _edge(on_merge), [m_ct, m_sft, m_method, m_density, m_slack, m_prompt], [m_summary, m_layers, m_answer],
            concurrency_limit=1, concurrency_id="merge", **private,
        )  # fmt: skip
        m_bot.click(_edge(on_hand_over), [m_ct], [m_handed], **private)
        s_go.click(_edge(on_submit), [s_repo, s_language], [s_result], **private)
        j_go.click(_edge(on_job_status), [j_id], [j_state], **private)
        timer.tick(on_jobs, None, [jobs, j_note], **private)
        demo.load(on_jobs, None, [jobs, j_note], **private)
        for trigger in (r_language.change, r_refresh.click, demo.load):
            trigger(_edge(on_registry), [r_language], [r_table], **private)

        # -- the named API (gradio_client: positional arguments in this order) ---------------------
        api(_edge(on_gpu(api_generate)), api_name="generate", **generation)
        api(_edge(api_leaderboard), api_name="leaderboard")
        api(_edge(api_merge_preview), api_name="merge_preview", concurrency_limit=1, concurrency_id="merge")
        api(_edge(api_submit), api_name="submit")
        api(_edge(api_job_status), api_name="job_status")

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
