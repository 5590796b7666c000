"""The whole engine against the peer: mergekit 0.1.5 (test-only, LGPL) on the same recipe file.

fp32 inputs: bit-identical outputs for linear, task_arithmetic and ties. bf16 inputs (both tools
computing in fp32: `dtype: float32`, `out_dtype: bfloat16`): equal except where trimming ties at
the threshold (equal magnitudes straddle the cut, which each tool breaks its own way), so every
differing tensor must have such a tie.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import load_recipe

mergekit = pytest.importorskip("mergekit")


def _config(family: DemoFamily, method: str, dtype: str, out_dtype: str | None = None) -> dict:
    params = {"weight": 0.6} if method == "linear" else {"weight": 0.6, "density": 0.35}
    if method == "task_arithmetic":
        params.pop("density")
    data = {
        "merge_method": method,
        "base_model": str(family.base),
        "dtype": dtype,
        "models": [{"model": str(family.ct), "parameters": params},
                   {"model": str(family.sft), "parameters": {**params, "weight": 1.1}}],
    }
    if method == "linear":
        data.pop("base_model")
    if out_dtype:
        data["out_dtype"] = out_dtype
    return data


def _mergekit(config_path: Path, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge as mk_run_merge

    config = MergeConfiguration.model_validate(yaml.safe_load(config_path.read_text()))
    mk_run_merge(config, str(out), options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    state: dict[str, torch.Tensor] = {}
    for file in sorted(out.glob("*.safetensors")):
        state.update(load_file(file))
    return state


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_fp32_bit_identical_to_mergekit(tiny_family: DemoFamily, tmp_path: Path, method: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(_config(tiny_family, method, "float32")))
    theirs = _mergekit(config, tmp_path / "mergekit")
    run_merge(plan_merge(load_recipe(config)), out=tmp_path / "ours", device="cpu", progress=False)
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype == torch.float32
        assert torch.equal(ours[name], tensor), name


def test_bf16_differs_only_at_trimming_ties(tiny_family_bf16: DemoFamily, tmp_path: Path) -> None:
    family = tiny_family_bf16
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(_config(family, "ties", "float32", "bfloat16")))
    theirs = _mergekit(config, tmp_path / "mergekit")
    run_merge(plan_merge(load_recipe(config)), out=tmp_path / "ours", device="cpu", progress=False)
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    base, inputs = load_file(family.base / "model.safetensors"), [load_file(m / "model.safetensors")
                                                                  for m in (family.ct, family.sft)]
    differing = [name for name in theirs if not torch.equal(ours[name], theirs[name])]
    for name in differing:
        # A different tie-break changes which entries survive trimming, and everything after
        # trimming is elementwise: each differing position must hold, in some input, a magnitude
        # equal to that input's cut (the k-th largest |τ|).
        at_cut = torch.zeros(base[name].shape, dtype=torch.bool)
        for model in inputs:
            delta = (model[name].float() - base[name].float()).abs()
            k = int(0.35 * delta.numel())
            threshold = delta.flatten().kthvalue(delta.numel() - k + 1).values
            at_cut |= delta == threshold
        positions = ours[name] != theirs[name]
        assert bool(at_cut[positions].all()), f"{name}: differs from mergekit away from the trimming cut"
    assert all(ours[n].dtype == torch.bfloat16 for n in ours)
    assert len(differing) < len(theirs)
