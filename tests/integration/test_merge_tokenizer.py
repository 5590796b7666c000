"""The `tokenizer:` block (`source: base|<model>`) and `chat_template` (`auto` or a Jinja template),
against mergekit 0.1.5 where it is deterministic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli import app
from registry.errors import RecipeError, UnsupportedFeatureError
from registry.lab.tiny import DemoFamily
from registry.recipe import parse_recipe

TEMPLATE = "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"


def _merge(config: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["--quiet", "merge", str(path), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def _ties(family: DemoFamily, **extra: object) -> dict[str, object]:
    return {
        "merge_method": "ties",
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ct), "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": str(family.sft), "parameters": {"weight": 0.4, "density": 0.5}},
        ],
        "dtype": "float32",
        **extra,
    }


def _load(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_literal_chat_template_equals_mergekits(tiny_family: DemoFamily, tmp_path: Path) -> None:
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = _ties(tiny_family, chat_template=TEMPLATE)
    _merge(config, tmp_path / "ours")
    ours = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert ours["chat_template"] == TEMPLATE
    # mergekit saves a chat template only with a tokenizer it builds (tokenizer_source)
    theirs_config = {**config, "tokenizer_source": "base"}
    run_merge(MergeConfiguration.model_validate(theirs_config), str(tmp_path / "mk"), MergeOptions())
    theirs = json.loads((tmp_path / "mk" / "tokenizer_config.json").read_text())
    jinja = tmp_path / "mk" / "chat_template.jinja"
    assert (jinja.read_text() if jinja.is_file() else theirs["chat_template"]) == TEMPLATE
    mine_with_source = tmp_path / "ours-source"
    _merge(theirs_config, mine_with_source)
    a, b = _load(tmp_path / "mk"), _load(mine_with_source)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_auto_picks_the_template_most_inputs_share(tiny_family: DemoFamily, tmp_path: Path) -> None:
    dirs = {}
    for name, template in (("base", "{{ 'base' }}"), ("ct", TEMPLATE), ("sft", TEMPLATE)):
        dirs[name] = tmp_path / name
        shutil.copytree(getattr(tiny_family, name), dirs[name])
        config_file = dirs[name] / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**config, "chat_template": template}))
    family = DemoFamily(base=dirs["base"], ct=dirs["ct"], sft=dirs["sft"])
    _merge(_ties(family, chat_template="auto"), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
    _merge(_ties(family), tmp_path / "plain")  # without chat_template: the tokenizer model's own
    assert json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text())["chat_template"] == "{{ 'base' }}"


def test_tokenizer_block_source_is_tokenizer_source(tiny_family_extended: DemoFamily, tmp_path: Path) -> None:
    family = tiny_family_extended
    _merge(_ties(family, tokenizer={"source": str(family.ct)}), tmp_path / "block")
    _merge(_ties(family, tokenizer_source=f"model:{family.ct}"), tmp_path / "key")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "block" / name).read_bytes() == (tmp_path / "key" / name).read_bytes(), name
    assert json.loads((tmp_path / "block" / "config.json").read_text())["vocab_size"] == 320 + 16


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        ({"tokenizer": {"source": "union"}}, UnsupportedFeatureError, "tokenizer.source: union"),
        (
            {
                "tokenizer": {
                    "source": "base",
                    "tokens": {"<x>": {"source": {"kind": "model_token", "model": "a/b", "token": "<y>"}}},
                }
            },
            UnsupportedFeatureError,
            "model_token",
        ),
        ({"tokenizer": {"source": "base"}, "tokenizer_source": "base"}, RecipeError, "not both"),
        ({"chat_template": "chatml"}, RecipeError, "named templates are not shipped"),
    ],
)
def test_tokenizer_refusals(tiny_family: DemoFamily, extra: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_recipe(_ties(tiny_family, **extra))


def test_tokenizer_source_base_with_an_extended_input_equals_mergekits(
    tiny_family_extended: DemoFamily, tmp_path: Path
) -> None:
    # The CT has 16 extra tokens; with the base's vocabulary both tools drop its extra rows.
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = _ties(tiny_family_extended, tokenizer={"source": "base"})
    _merge(config, tmp_path / "ours")
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"), MergeOptions())
    a, b = _load(tmp_path / "mk"), _load(tmp_path / "ours")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert b["model.embed_tokens.weight"].shape[0] == 320


@pytest.mark.parametrize("method", ["ties", "linear"])
def test_extended_vocabulary_rows_filled_as_mergekit(
    method: str, tiny_family_extended: DemoFamily, tmp_path: Path
) -> None:
    # The output vocabulary is the CT's (16 added tokens): the other inputs take the CT's rows for
    # them and the method merges the whole tensor, as mergekit's PermutedVocabulary does.
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    family = tiny_family_extended
    config = _ties(family, tokenizer={"source": str(family.ct)})
    if method == "linear":
        config = {**config, "merge_method": "linear"}
        config.pop("base_model")
        config["models"] = [
            {"model": m["model"], "parameters": {"weight": m["parameters"]["weight"]}} for m in config["models"]
        ]  # type: ignore[index, union-attr, attr-defined]
    _merge(config, tmp_path / "ours")
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"), MergeOptions())
    a, b = _load(tmp_path / "mk"), _load(tmp_path / "ours")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert b["model.embed_tokens.weight"].shape[0] == 336


@pytest.mark.parametrize("method", ["ties", "linear"])
def test_per_token_sources_equal_mergekits(method: str, tiny_family_extended: DemoFamily, tmp_path: Path) -> None:
    # tokens: an added token with a zero row for the inputs that lack it, another from the CT, and
    # `<s>` forced to the SFT's row in every input.
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    family = tiny_family_extended
    vocab = json.loads((family.ct / "tokenizer.json").read_text())["model"]["vocab"]
    added = sorted((i, tok) for tok, i in vocab.items() if i >= 320)
    tokens = {
        added[0][1]: {"source": {"kind": "zero"}},
        added[1][1]: {"source": str(family.ct)},
        "<s>": {"source": str(family.sft), "force": True},
    }
    config = _ties(family, tokenizer={"source": str(family.ct), "tokens": tokens})
    if method == "linear":
        config = {**config, "merge_method": "linear"}
        config.pop("base_model")
        config["models"] = [
            {"model": m["model"], "parameters": {"weight": m["parameters"]["weight"]}} for m in config["models"]
        ]  # type: ignore[index, union-attr, attr-defined]
    _merge(config, tmp_path / "ours")
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"), MergeOptions())
    a, b = _load(tmp_path / "mk"), _load(tmp_path / "ours")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    sft = _load(family.sft)
    if method == "linear":  # every input has the SFT's <s> row: the merge is that row (0.6 + 0.4 = 1)
        emb, ct = b["model.embed_tokens.weight"], _load(family.ct)["model.embed_tokens.weight"]
        assert torch.allclose(emb[1], sft["model.embed_tokens.weight"][1])
        assert torch.allclose(emb[added[0][0]], 0.6 * ct[added[0][0]])  # the SFT's row was zero
        assert torch.allclose(emb[added[1][0]], ct[added[1][0]])
