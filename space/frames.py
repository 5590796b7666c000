"""Tables and plot data as pandas frames for the app's Gradio components (columns, empty values, seeding)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

BAR_COLUMNS = ["metric", "bar", "model", "repo", "value", "relative"]
SCATTER_COLUMNS = ["language gain kept", "task gain kept", "method", "repo"]
LAYER_COLUMNS = ["layer", "stat", "share", "count"]
BAR_MODELS = ("CT", "SFT", "CT→SFT", "merged")  # the colour categories of each plot (see `seeded`)
LAYER_STATS = ("sign conflicts", "SFT discarded", "rescued by slack")  # kept shares are in the summary
REGISTRY_COLUMNS = ["kind", "language", "repo", "revision", "lineage", "id"]

_NUMERIC = {"value", "relative", "share", "count", "language gain kept", "task gain kept"}


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A frame with the plot's column types even when empty (an empty float column would make the
    plot's colour scale quantitative, and it would stay so after data arrives)."""
    import pandas as pd

    if rows:
        return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame({c: pd.Series(dtype=float if c in _NUMERIC else object) for c in columns})


def seeded(columns: list[str], color: str, categories: list[str]) -> pd.DataFrame:
    """An empty-looking first value that names every colour category (NaN rows draw nothing).

    Gradio 6.31's native plots fix their colour domain from the first value they render; categories
    that arrive later are drawn without a fill. Seeding the categories keeps the bars coloured.
    """
    rows = [{c: (float("nan") if c in _NUMERIC else "") for c in columns} | {color: cat} for cat in categories]
    return frame(rows, columns)


def link_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Leaderboard rows for a markdown table: the model as a link to its repo, no separate link column."""
    import pandas as pd

    if not rows:
        return pd.DataFrame({"model": [], "role": []})
    shown = [{**r, "model": f"[{r['model']}]({r['link']})"} for r in rows]
    return pd.DataFrame(shown).drop(columns=["link"])
