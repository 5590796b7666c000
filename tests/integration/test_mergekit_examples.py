"""Every example configuration shipped with mergekit 0.1.5 (examples/*.yml and the configs of its
README and docs, copied with their LGPL-3.0 notice under tests/data/mergekit_examples/), run on tiny
local models through mergekit and through `registry merge`, compared tensor by tensor.

The tiny models are stored in each example's `dtype`, so both tools read the same values. mergekit
also COMPUTES in `dtype` (fp16/bf16 arithmetic) where Mergeling computes in fp32 and rounds once;
for those examples the comparison is with mergekit run at fp32 compute (`dtype: float32`,
`out_dtype: <the example's dtype>`), the same arithmetic as ours. `EXPECTED` is the table of
docs/merge.md: (which mergekit run, `bitwise` = every tensor bit-identical, or `ties` = equal but
at a few trimming-threshold ties, at most 0.1 % of the entries), or a refusal (our message).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.tiny import build_tiny_llama, derive_finetune

mergekit = pytest.importorskip("mergekit", reason="mergekit 0.1.5 is the test extra: pip install -e '.[test]'")

EXAMPLES = Path(__file__).parent.parent / "data" / "mergekit_examples"
EXPECTED: dict[str, tuple[str, str] | str] = {
    "arcee_fusion.yml": ("fp32 compute", "bitwise"),
    "bio-merge.yml": ("fp32 compute", "ties"),
    "gradient-slerp.yml": ("as is", "bitwise"),
    "linear.yml": ("as is", "bitwise"),
    "orcamini-platy-44layer.yml": ("as is", "bitwise"),
    "ties.yml": ("fp32 compute", "ties"),
    "docs-create_a_merge_method.yml": "refused: merge_method 'weighted_average' is unknown",
    "docs-readme-tokenizer-union.yml": "refused: tokenizer.source: union",
    "docs-readme-tokenizer-source.yml": "refused: tokenizer_source: union",
}


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Per dtype: BASE (a tiny 5-layer Llama) and FT_A/FT_B/FT_C, three fine-tunes, stored in that dtype."""
    root = tmp_path_factory.mktemp("examples")
    out = {}
    for dtype in ("float32", "float16", "bfloat16"):
        base = build_tiny_llama(
            root / dtype / "base", seed=11, num_layers=5, hidden_size=32, intermediate_size=64, dtype=dtype
        )
        models = {"BASE": str(base)}
        for seed, name in enumerate(("FT_A", "FT_B", "FT_C"), start=12):
            models[name] = str(derive_finetune(base, root / dtype / name.lower(), seed=seed))
        out[dtype] = models
    return out


def _substitute(node: object, models: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: _substitute(v, models) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, models) for v in node]
    return models.get(node, node) if isinstance(node, str) else node


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_every_shipped_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_through_both_tools(name: str, families: dict[str, dict[str, str]], tmp_path: Path) -> None:
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    config = _substitute(raw, families[raw.get("dtype", "float32")])
    assert isinstance(config, dict)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    expected = EXPECTED[name]
    ours = CliRunner().invoke(app, ["--quiet", "merge", str(path), "--out", str(tmp_path / "ours"), "--device", "cpu"])
    if isinstance(expected, str) and expected.startswith("refused: "):
        assert ours.exit_code != 0
        assert expected.removeprefix("refused: ") in ours.output, ours.output
        return
    assert ours.exit_code == 0, ours.output
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run, check = expected
    theirs_config = config if run == "as is" else {**config, "dtype": "float32", "out_dtype": config["dtype"]}
    run_merge(
        MergeConfiguration.model_validate(theirs_config), str(tmp_path / "mergekit"), MergeOptions(copy_tokenizer=False)
    )
    theirs, mine = _load(tmp_path / "mergekit"), _load(tmp_path / "ours")
    assert theirs and sorted(theirs) == sorted(mine)
    differ = total = 0
    for tensor in theirs:
        assert theirs[tensor].dtype == mine[tensor].dtype, tensor
        bits = torch.int16 if theirs[tensor].element_size() == 2 else torch.int32
        unequal = int((theirs[tensor].view(bits) != mine[tensor].view(bits)).sum())
        if check == "bitwise":
            assert unequal == 0, tensor
        differ += unequal
        total += theirs[tensor].numel()
    print(f"{name}: {len(theirs)} tensors, {differ} of {total} entries differ")
    assert differ <= 0.001 * total
