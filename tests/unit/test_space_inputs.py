"""Argument checks of the Space (`space.inputs`) and which merges the Try tab can run."""

from __future__ import annotations

import pytest

from space.errors import PromptError
from space.inputs import number, text, whole_number


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "max_new_tokens must be a whole number from 1 to 64, not 'lots'"),
        (2.5, "max_new_tokens must be a whole number from 1 to 64, not 2.5"),
        (True, "max_new_tokens must be a whole number from 1 to 64, not True"),
        (None, "max_new_tokens must be a whole number from 1 to 64, not None"),
        (float("nan"), "max_new_tokens must be a whole number from 1 to 64, not nan"),
        (0, "max_new_tokens must be from 1 to 64 in this Space, not 0"),
        (65, "max_new_tokens must be from 1 to 64 in this Space, not 65"),
    ],
)
def test_whole_number_refuses_with_one_line(value: object, message: str) -> None:
    with pytest.raises(PromptError) as info:
        whole_number(value, name="max_new_tokens", low=1, high=64)
    assert str(info.value) == message


def test_whole_number_accepts_whole_floats() -> None:
    assert whole_number(12.0, name="n", low=1, high=64) == 12


def test_number_intervals() -> None:
    assert number(1, name="density", low=0.0, high=1.0, low_open=True) == 1.0
    with pytest.raises(PromptError, match=r"^density must be in \(0, 1\], not 0$"):
        number(0, name="density", low=0.0, high=1.0, low_open=True)
    with pytest.raises(PromptError, match=r"^density must be in \(0, 1\], not 5$"):
        number(5, name="density", low=0.0, high=1.0, low_open=True)
    with pytest.raises(PromptError, match=r"^slack must be a number in \[0, 1\], not 'x'$"):
        number("x", name="slack", low=0.0, high=1.0)


def test_text_is_capped_before_anything_reads_it() -> None:
    with pytest.raises(PromptError, match=r"^the prompt is 1,000,001 characters; this Space takes at most 8,000"):
        text("x" * 1_000_001, name="the prompt", max_chars=8_000)
    with pytest.raises(PromptError, match="the prompt is empty"):
        text("   ", name="the prompt", max_chars=10)
    with pytest.raises(PromptError, match="must be text, not list"):
        text(["a"], name="the prompt", max_chars=10)
    assert text("", name="search", max_chars=10, required=False) == ""


def test_published_merges_are_runnable_failed_ones_are_not() -> None:
    from registry.catalog.entries import MergeEntry, MergeInput, merge_entry_id
    from space.catalog_view import CatalogView

    def merge(repo: str, status: str, revision: str | None) -> MergeEntry:
        return MergeEntry(
            id=merge_entry_id(output_repo=repo, recipe_hash="0" * 64), method="ties_sv", recipe_hash="0" * 64,
            inputs=(MergeInput(role="ct", repo="a/ct", revision="1" * 40),
                    MergeInput(role="sft", repo="a/sft", revision="2" * 40)),
            output_repo=repo, output_revision=revision, status=status, languages=("ben_Beng",),
        )  # type: ignore[arg-type]  # fmt: skip

    view = CatalogView(
        repo_id="bot/registry", cts=(), sfts=(),
        merges=(merge("bot/published", "published", "3" * 40), merge("bot/failed", "failed", None),
                merge("bot/running", "running", None), merge("me/pushed", "merged", "4" * 40)),
    )  # fmt: skip
    assert [t.merge.output_repo for t in view.trios("ben_Beng")] == ["bot/published", "me/pushed"]
    assert view.trios("tam_Taml") == []
    assert [m.output_repo for m in view.only({"me/pushed"}).merges] == ["me/pushed"]
