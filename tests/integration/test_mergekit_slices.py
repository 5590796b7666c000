"""`slices:` frankenmerges (layer ranges from several models, renumbered), exact against mergekit 0.1.5.

mergekit (a test-only peer, LGPL) and `registry merge` run the SAME config file on tiny 5-layer
Llama models; fp32 outputs must be bit-identical tensor by tensor (slerp within 1e-6, as without
slices), and the output config's num_hidden_layers is the stitched count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from registry.errors import RecipeError
from registry.lab.tiny import DemoFamily, build_tiny_llama, derive_finetune
from registry.recipe import parse_recipe
from tests._fixtures.mergekit_peer import load_tensors, run_both

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def family5(tmp_path_factory: pytest.TempPathFactory) -> DemoFamily:
    root = tmp_path_factory.mktemp("family5")
    base = build_tiny_llama(root / "base", seed=5, num_layers=5, hidden_size=32, intermediate_size=64)
    return DemoFamily(
        base=base, ct=derive_finetune(base, root / "ct", seed=6), sft=derive_finetune(base, root / "sft", seed=7)
    )


def assert_identical(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], tolerance: float = 0.0) -> None:
    assert sorted(theirs) == sorted(ours)
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype, name
        if tolerance:
            assert float((theirs[name] - ours[name]).abs().max()) <= tolerance, name
        else:
            assert torch.equal(theirs[name].view(torch.int32), ours[name].view(torch.int32)), name


def test_passthrough_frankenmerge_duplicates_and_renumbers(family5: DemoFamily, tmp_path: Path) -> None:
    # mergekit's orcamini-platy-44layer shape: overlapping ranges of two models, 3 + 4 = 7 layers.
    config = {
        "slices": [
            {"sources": [{"model": str(family5.ct), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(family5.sft), "layer_range": [1, 5]}]},
        ],
        "merge_method": "passthrough",
        "dtype": "float32",
    }
    theirs, ours = run_both(config, tmp_path)
    assert_identical(theirs, ours)
    ct, sft = load_tensors(family5.ct), load_tensors(family5.sft)
    assert torch.equal(ours["model.layers.2.mlp.up_proj.weight"], ct["model.layers.2.mlp.up_proj.weight"])
    assert torch.equal(ours["model.layers.3.mlp.up_proj.weight"], sft["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(ours["model.layers.6.self_attn.q_proj.weight"], sft["model.layers.4.self_attn.q_proj.weight"])
    assert torch.equal(ours["model.embed_tokens.weight"], ct["model.embed_tokens.weight"])  # first slice
    assert torch.equal(ours["lm_head.weight"], sft["lm_head.weight"])  # last slice
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["num_hidden_layers"] == 7
    assert json.loads((tmp_path / "mergekit" / "config.json").read_text())["num_hidden_layers"] == 7
    recipe = yaml.safe_load((tmp_path / "ours" / "mergeling_recipe.yaml").read_text())
    assert "slices" in recipe and "models" not in recipe  # written as given


def test_passthrough_scale_filter_per_slice(family5: DemoFamily, tmp_path: Path) -> None:
    # the "duplicated layers with zeroed outputs" recipe: scale o_proj and down_proj to 0 in the copy.
    zero = [{"filter": "o_proj", "value": 0.0}, {"filter": "down_proj", "value": 0.0}, {"value": 1.0}]
    config = {
        "slices": [
            {"sources": [{"model": str(family5.base), "layer_range": [0, 4]}]},
            {"sources": [{"model": str(family5.base), "layer_range": [2, 4]}], "parameters": {"scale": zero}},
            {"sources": [{"model": str(family5.base), "layer_range": [4, 5]}]},
        ],
        "merge_method": "passthrough",
        "dtype": "float32",
    }
    theirs, ours = run_both(config, tmp_path)
    assert_identical(theirs, ours)
    assert not ours["model.layers.5.self_attn.o_proj.weight"].any()
    assert ours["model.layers.3.self_attn.o_proj.weight"].any()


def test_gradient_slerp_slices_example(family5: DemoFamily, tmp_path: Path) -> None:
    # mergekit's examples/gradient-slerp.yml on tiny models.
    config = {
        "slices": [
            {
                "sources": [
                    {"model": str(family5.base), "layer_range": [0, 5]},
                    {"model": str(family5.ct), "layer_range": [0, 5]},
                ]
            }
        ],
        "merge_method": "slerp",
        "base_model": str(family5.base),
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                {"value": 0.5},
            ]
        },
        "dtype": "float32",
    }
    assert_identical(*run_both(config, tmp_path), tolerance=1e-6)


def test_ties_two_slices_with_their_own_parameters(family5: DemoFamily, tmp_path: Path) -> None:
    config = {
        "slices": [
            {
                "sources": [
                    {"model": str(family5.base), "layer_range": [0, 2]},
                    {"model": str(family5.ct), "layer_range": [0, 2], "parameters": {"weight": [0.2, 1.0]}},
                    {"model": str(family5.sft), "layer_range": [0, 2]},
                ],
                "parameters": {"density": 0.4, "weight": 0.7},
            },
            {
                "sources": [
                    {"model": str(family5.sft), "layer_range": [2, 5], "parameters": {"density": 0.9}},
                    {"model": str(family5.base), "layer_range": [2, 5]},
                    {"model": str(family5.ct), "layer_range": [1, 4]},
                ],
            },
        ],
        "merge_method": "ties",
        "base_model": str(family5.base),
        "parameters": {"density": [0.3, 0.6], "weight": 0.8, "lambda": 0.9},
        "dtype": "float32",
    }
    assert_identical(*run_both(config, tmp_path))


def test_slices_refusals_name_the_fix(family5: DemoFamily) -> None:
    base, ct = str(family5.base), str(family5.ct)
    bad = [
        ({"slices": [{"sources": [{"model": ct, "layer_range": [0, 2]}, {"model": base, "layer_range": [0, 3]}]}]}, "same number of layers"),
        ({"slices": [{"sources": [{"model": ct, "layer_range": [2, 2]}]}]}, "0 <= start < end"),
        ({"slices": [{"sources": [{"model": ct, "layer_range": [0, 2]}]}], "models": [{"model": ct}]}, "either `models:` or `slices:`"),
    ]  # fmt: skip
    for change, message in bad:
        with pytest.raises(RecipeError, match=message):
            parse_recipe({"merge_method": "passthrough", **change})
    with pytest.raises(RecipeError, match="needs the base_model .* among the sources"):
        parse_recipe(
            {
                "merge_method": "ties",
                "base_model": base,
                "slices": [{"sources": [{"model": ct, "layer_range": [0, 2]}]}],
            }
        )


def test_linear_slices_with_plain_per_source_weights(family5: DemoFamily, tmp_path: Path) -> None:
    # No gradient or filter anywhere: each slice's own sources and weights still decide its layers.
    config = {
        "slices": [
            {
                "sources": [
                    {"model": str(family5.ct), "layer_range": [0, 2], "parameters": {"weight": 0.3}},
                    {"model": str(family5.sft), "layer_range": [0, 2], "parameters": {"weight": 0.9}},
                ]
            },
            {
                "sources": [
                    {"model": str(family5.base), "layer_range": [2, 5], "parameters": {"weight": 0.5}},
                    {"model": str(family5.ct), "layer_range": [2, 5], "parameters": {"weight": 0.2}},
                ]
            },
        ],
        "merge_method": "linear",
        "parameters": {"normalize": False},
        "dtype": "float32",
    }
    assert_identical(*run_both(config, tmp_path))
