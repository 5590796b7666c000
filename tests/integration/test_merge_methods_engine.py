"""slerp and DARE through the streaming engine: each tensor equals the method on whole tensors; DARE is reproducible."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.methods.dare import merge_dare
from registry.merge.methods.slerp import merge_slerp
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe


def _state(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def test_dare_ties_reproducible_and_per_tensor(tiny_family: DemoFamily, tmp_path: Path) -> None:
    data = {
        "merge_method": "dare_ties",
        "base_model": str(tiny_family.base),
        "models": [
            {"model": str(tiny_family.ct), "role": "ct", "parameters": {"weight": 1.0, "density": 0.4}},
            {"model": str(tiny_family.sft), "role": "sft", "parameters": {"weight": 0.7, "density": 0.6}},
        ],
        "parameters": {"random_seed": 11, "normalize": True},
    }
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        run_merge(plan_merge(parse_recipe(data)), out=out, device="cpu", progress=False)
    for file in sorted(p.name for p in first.iterdir()):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file
    got = _state(first)
    base, ct, sft = _state(tiny_family.base), _state(tiny_family.ct), _state(tiny_family.sft)
    for name in base:
        want = merge_dare(
            [ct[name], sft[name]],
            base[name],
            weights=[1.0, 0.7],
            densities=[0.4, 0.6],
            normalize=True,
            random_seed=11,
            name=name,
        )
        assert torch.equal(got[name], want.to(got[name].dtype)), name
    report = json.loads((first / "merge_report.json").read_text())
    # As for ties: the role sft input is protected for the diagnostics (slack 0: no rescue).
    assert report["method"] == "dare_ties" and report["protected"] == [str(tiny_family.sft)]
    kept = report["totals"]["kept"]
    total = report["totals"]["elements"]
    assert abs(kept[str(tiny_family.ct)] / total - 0.4) < 0.02  # the drop keeps ≈ density


@pytest.mark.parametrize("scope", ["tensor", "model"])
def test_dare_ties_slack_through_the_engine(tiny_family: DemoFamily, tmp_path: Path, scope: str) -> None:
    def recipe(slack: float) -> dict[str, object]:
        return {
            "merge_method": "dare_ties",
            "base_model": str(tiny_family.base),
            "dtype": "float32",
            "models": [
                {"model": str(tiny_family.ct), "role": "ct", "parameters": {"density": 0.4}},
                {"model": str(tiny_family.sft), "role": "sft", "parameters": {"density": 0.6}},
            ],
            "parameters": {"random_seed": 5, "slack": slack, "slack_scope": scope},
        }

    reports = {}
    for slack in (0.0, 0.3):
        out = tmp_path / f"s{slack}"
        run_merge(plan_merge(parse_recipe(recipe(slack))), out=out, device="cpu", progress=False)
        reports[slack] = json.loads((out / "merge_report.json").read_text())["totals"]
    sft = str(tiny_family.sft)
    conflicts = reports[0.0]["conflicts"][sft]
    assert conflicts > 0 and reports[0.0]["rescued"].get(sft, 0) == 0
    assert reports[0.3]["conflicts"][sft] == conflicts  # the same drop: the same conflicts before the slack
    rescued = reports[0.3]["rescued"][sft]
    if scope == "model":
        assert rescued == math.ceil(0.3 * conflicts)
    else:  # ⌈·⌉ per tensor: at least the model-wide share, at most one more per tensor
        assert math.ceil(0.3 * conflicts) <= rescued


def test_slerp_through_the_engine(tiny_family: DemoFamily, tmp_path: Path) -> None:
    data = {
        "merge_method": "slerp",
        "base_model": str(tiny_family.base),
        "models": [{"model": str(tiny_family.base)}, {"model": str(tiny_family.sft)}],
        "parameters": {"t": 0.6},
    }
    plan = plan_merge(parse_recipe(data))
    assert "t 0.6" in plan.describe()
    run_merge(plan, out=tmp_path / "out", device="cpu", progress=False)
    got = _state(tmp_path / "out")
    base, sft = _state(tiny_family.base), _state(tiny_family.sft)
    for name in base:
        assert torch.equal(got[name], merge_slerp([sft[name]], base[name], t=0.6).to(got[name].dtype)), name


@pytest.mark.parametrize("method", ["della", "della_linear", "breadcrumbs_ties", "model_stock", "sce"])
def test_new_methods_through_the_engine(tiny_family: DemoFamily, tmp_path: Path, method: str) -> None:
    data = {
        "merge_method": method,
        "base_model": str(tiny_family.base),
        "models": [
            {"model": str(tiny_family.ct), "role": "ct"},
            {"model": str(tiny_family.sft), "role": "sft"},
        ],
    }
    if method in ("della", "della_linear", "breadcrumbs_ties"):
        data["parameters"] = {"density": 0.5}
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_merge(plan_merge(parse_recipe(data)), out=out, device="cpu", progress=False)
    got = _state(outs[0])
    assert got.keys() == _state(tiny_family.base).keys()
    assert all(bool(torch.isfinite(t).all()) for t in got.values())
    for file in sorted(p.name for p in outs[0].glob("*.safetensors")):  # seeded: the same bytes twice
        assert (outs[0] / file).read_bytes() == (outs[1] / file).read_bytes(), file
    report = json.loads((outs[0] / "merge_report.json").read_text())
    assert report["method"] == method
    if method.startswith("della"):
        kept = report["totals"]["kept"][str(tiny_family.ct)] / report["totals"]["elements"]
        assert abs(kept - 0.5) < 0.03
