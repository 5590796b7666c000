"""`registry lab experiment` end to end on a very small lab and real data: one seed, a tiny --limit.

Real builds, real merges (the engine's Recipe API), real `registry eval` runs; the numbers mean nothing
at this size, the test checks that every model of every CT point is built, evaluated, rendered and
that a second run redoes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.experiment import (
    ExperimentResult,
    Point,
    _interval,
    crossings,
    gains_kept,
    modules_recipe,
    tables_markdown,
)
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge

REPO = Path(__file__).resolve().parents[2]
TASKS = "sib200_ben_Beng,flores_ben_Beng,sib200_eng_Latn"


def _run(out: Path, data: Path, *extra: str) -> str:
    result = CliRunner().invoke(
        app,
        [
            "lab", "experiment", "--out", str(out), "--tiny", "--layers", "3", "--seeds", "0",
            "--steps", "base=6,ct=6,sft=4", "--ct-save-steps", "2,4", "--limit", "3", "--tasks", TASKS,
            "--data-dir", str(data), "--suite", str(REPO / "recipes" / "eval" / "ben_Beng.yaml"),
            "--tasks-dir", str(REPO / "recipes" / "tasks"), *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_experiment_builds_merges_evaluates_and_resumes(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "exp"
    text = _run(out, shared_data)
    result = ExperimentResult.from_json((out / "results.json").read_text(encoding="utf-8"))
    assert result.tasks == tuple(TASKS.split(",")) and result.limit == 3 and not result.synthetic
    assert result.metrics == {"sib200_ben_Beng": "acc", "flores_ben_Beng": "bits_per_byte", "sib200_eng_Latn": "acc"}
    (s1, t1), (s2, t2), (s3, t3) = result.steps()
    assert (s1, s2, s3) == (2, 4, 6) and t1 > 0 and (t2, t3) == (2 * t1, 3 * t1)  # the same rows per CT step
    got = {(p.step, p.method) for p in result.points}
    expected = {(0, "base"), (0, "sft")} | {(s, m) for s in (2, 4, 6) for m in ("ct", "ct_sft", "ties", "ties_sv")}
    assert got == expected | {(6, v) for v in ("modules", "ties_d0.5", "ties_sv_d0.5", "modules_dense", "layer_swap")}
    for p in result.points:
        assert set(p.scores) == set(result.tasks)
        assert all(0 <= v <= 1 for t, v in p.scores.items() if t.startswith("sib200"))
        assert p.scores["flores_ben_Beng"] > 0
        if p.method in ("ties", "ties_sv"):
            assert p.discard is not None and 0 <= p.discard["discarded"] <= p.discard["conflict"] <= 1
            if p.method == "ties":
                assert p.discard["rescued"] == 0
    # the CT-then-SFT of each point started from that point's CT (its card says so)
    card = (out / "seed0" / "lab" / "ct-ben_Beng-step2-sft" / "README.md").read_text(encoding="utf-8")
    assert "tiny-ct-ben_Beng-step2" in card
    # the layer swap: CT's embeddings, head and bottom/top layers, the SFT's middle layer, bit for bit
    swap = out / "seed0" / "merges" / "layer_swap-step6" / "model.safetensors"
    origin = json.loads((swap.parent / "variant.json").read_text(encoding="utf-8"))["tensors"]
    assert origin["model.embed_tokens.weight"] == origin["lm_head.weight"] == "ct"
    assert origin["model.layers.0.mlp.up_proj.weight"] == origin["model.layers.2.self_attn.q_proj.weight"] == "ct"
    assert origin["model.layers.1.mlp.up_proj.weight"] == "sft"
    with (
        safe_open(str(swap), "pt") as merged,
        safe_open(str(out / "seed0" / "lab" / "sft" / "model.safetensors"), "pt") as sft,
    ):
        assert merged.get_tensor("model.layers.1.mlp.up_proj.weight").equal(
            sft.get_tensor("model.layers.1.mlp.up_proj.weight")
        )
    # the per-module variant, stitched from separate merges, is the engine's one `filter:` recipe
    lab = out / "seed0" / "lab"
    recipe = modules_recipe(base=lab / "base", ct=lab / "ct-ben_Beng", sft=lab / "sft", language="ben_Beng")
    run_merge(plan_merge(recipe), out=tmp_path / "filtered", device="cpu", progress=False)
    filtered = load_file(str(tmp_path / "filtered" / "model.safetensors"))
    stitched = load_file(str(out / "seed0" / "merges" / "modules-step6" / "model.safetensors"))
    assert filtered.keys() == stitched.keys()
    for name, tensor in stitched.items():
        if any(part in name for part in ("embed_tokens", "lm_head", "model.norm")):  # base + (CT - base)
            assert torch.allclose(filtered[name], tensor, rtol=0, atol=1e-6), name
        else:
            assert filtered[name].equal(tensor), name
    # rendered: per CT point a methods x tasks table with the average, the discard shares, the gains kept
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table in text
    for label in ("CT-then-SFT", "TIES-SV", "per-module", "layer swap", "average (accuracy tasks)", "one seed"):
        assert label in table
    assert "**CT step 2 (1.0k CT tokens)**" in table and "language gain kept" in table and "†" in table
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text(encoding="utf-8"))))
    assert {r["method"] for r in rows} >= {"ct_sft", "ties", "ties_sv", "sft", "base"}
    assert all(r["ci95"] == "" and r["n_seeds"] == "1" for r in rows)

    # a second run keeps every trained and merged model and every evaluation record (the lab rewrites its cards)
    def stamps() -> dict[Path, int]:
        kept = [*(out / "seed0").rglob("*.safetensors"), *(out / "seed0" / "eval").glob("*.json")]
        kept += (out / "seed0" / "merges").rglob("merge_report.json")
        return {p: p.stat().st_mtime_ns for p in kept}

    before = stamps()
    assert len(before) > 30
    _run(out, shared_data)
    assert stamps() == before


def test_intervals_over_seeds_and_gains_kept() -> None:
    mean, half = _interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.303 * 0.1 / 3**0.5)
    assert _interval([0.4]) == (0.4, None)
    points = []
    for seed, (ct, sft, merge) in enumerate(
        [((1.0, 0.2), (5.0, 0.6), (2.0, 0.5)), ((1.0, 0.2), (5.0, 0.6), (1.8, 0.56))]
    ):
        for method, (bpb, acc) in (("ct", ct), ("sft", sft), ("ties", merge)):
            step = 0 if method == "sft" else 10
            points.append(Point(seed, step, 100 * step, method, {"flores_ben_Beng": bpb, "sib200_eng_Latn": acc}))
    result = ExperimentResult(
        language="ben_Beng", seeds=(0, 1), tasks=("flores_ben_Beng", "sib200_eng_Latn"),
        metrics={"flores_ben_Beng": "bits_per_byte", "sib200_eng_Latn": "acc"},
        higher_is_better={"flores_ben_Beng": False, "sib200_eng_Latn": True}, limit=None, synthetic=False,
        settings={}, points=points,
    )  # fmt: skip
    (row,) = gains_kept(result)
    assert row.method == "ties"
    assert row.language == pytest.approx([0.75, 0.8]) and row.task == pytest.approx([0.75, 0.9])
    assert not row.met(0.8) and row.met(0.75)
    table = tables_markdown(result)
    assert "± " in table and "- sib200_eng_Latn: TIES" not in table  # no CT-then-SFT in these points: no crossing line


def test_crossings_say_where_the_merge_overtakes_ct_then_sft() -> None:
    points = [Point(0, 0, 0, "sft", {"sib200_ben_Beng": 0.3})]
    for step, merge, ct_sft in ((10, 0.30, 0.20), (20, 0.25, 0.26), (40, 0.20, 0.30)):
        points += [Point(0, step, 100 * step, "ct", {"sib200_ben_Beng": 0.1})]
        points += [Point(0, step, 100 * step, "ties", {"sib200_ben_Beng": merge})]
        points += [Point(0, step, 100 * step, "ct_sft", {"sib200_ben_Beng": ct_sft})]
    result = ExperimentResult(
        language="ben_Beng", seeds=(0,), tasks=("sib200_ben_Beng",), metrics={"sib200_ben_Beng": "acc"},
        higher_is_better={"sib200_ben_Beng": True}, limit=None, synthetic=False, settings={}, points=points,
    )  # fmt: skip
    assert crossings(result) == [
        "sib200_ben_Beng: TIES vs CT-then-SFT: the order of the means changes by 2.0k CT tokens."
    ]
    later = [p for p in points if p.step != 10]
    result.points = later
    assert crossings(result) == ["sib200_ben_Beng: TIES below CT-then-SFT at every CT point (no crossing)."]
    assert "- sib200_ben_Beng: TIES below CT-then-SFT" in tables_markdown(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,x"], "is not a comma-separated list of seeds"),
        (["--seeds", ","], "give at least one seed"),
        (["--ct-save-steps", "5,a"], "--ct-save-steps '5,a' is not a comma-separated list"),
        (["--language", "xx"], "FLORES-200"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "data" / "mono").mkdir(parents=True)
    result = CliRunner().invoke(
        app, ["lab", "experiment", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()  # refused before anything was built
