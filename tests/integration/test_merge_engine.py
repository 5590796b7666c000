"""The streaming engine on tiny real checkpoints: outputs, layouts, dtypes, vocabularies, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.methods import TensorStats, get_method
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe


def _recipe(family: DemoFamily, method: str = "ties_sv", **extra: object) -> dict:
    params: dict = {"weight": 1.0}
    if method in ("ties", "ties_sv"):
        params["density"] = 0.3
    data: dict = {
        "merge_method": method,
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ct), "role": "ct", "language": "ben_Beng", "parameters": dict(params)},
            {"model": str(family.sft), "role": "sft", "parameters": {**params, "weight": 0.7}},
        ],
    }
    if method == "ties_sv":
        data["parameters"] = {"slack": 0.2}
    data.update(extra)
    return data


def _state(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(path / file))
    return state


def _expected(data: dict, family: DemoFamily, out_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Apply the method function directly to whole state dicts: what the engine must reproduce."""
    recipe = parse_recipe(data)
    spec = get_method(recipe.merge_method)
    base, ct, sft = _state(family.base), _state(family.ct), _state(family.sft)
    extra: dict = {}
    if recipe.protected_indices():
        extra["protect"] = list(recipe.protected_indices())
    if recipe.merge_method == "ties_sv":
        extra["slack"] = recipe.parameters.slack  # type: ignore[attr-defined]
    out = {}
    for name, tensor in base.items():
        merged = spec.fn(
            [ct[name].float(), sft[name].float()],
            base[name].float(),
            weights=list(recipe.weights()),
            densities=list(recipe.densities()),
            normalize=spec.default_normalize,
            lambda_=spec.default_lambda,
            **extra,
        )
        out[name] = merged.to(out_dtype or tensor.dtype)
    return out


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "ties_sv"])
def test_engine_matches_method_on_whole_tensors(tiny_family: DemoFamily, tmp_path: Path, method: str) -> None:
    data = _recipe(tiny_family, method)
    out = tmp_path / "out"
    result = run_merge(plan_merge(parse_recipe(data)), out=out, device="cpu", progress=False)
    got, want = _state(out), _expected(data, tiny_family)
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert result.report.totals().elements == sum(t.numel() for t in want.values())
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "mergeling_recipe.yaml",
        "merge_report.json",
        "README.md",
    ):
        assert (out / name).is_file(), name
    assert parse_recipe(yaml.safe_load((out / "mergeling_recipe.yaml").read_text())) == parse_recipe(data)
    assert not list(tmp_path.glob(".out.partial-*"))


def test_sharded_bf16_output_loads_in_transformers(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = _recipe(tiny_family, "ties_sv", dtype="bfloat16")
    out = tmp_path / "out"
    run_merge(plan_merge(parse_recipe(data)), out=out, device="cpu", shard_size="40KB", progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    got, want = _state(out), _expected(data, tiny_family, torch.bfloat16)
    assert all(torch.equal(got[n], want[n]) for n in want)
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("hello", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == config["vocab_size"]
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, got["model.layers.0.mlp.up_proj.weight"])


def test_sharded_bf16_inputs(tiny_family_bf16: DemoFamily, tiny_family_sharded: DemoFamily, tmp_path: Path) -> None:
    for family, name in ((tiny_family_bf16, "bf16"), (tiny_family_sharded, "sharded")):
        data = _recipe(family, "ties")
        run_merge(plan_merge(parse_recipe(data)), out=tmp_path / name, device="cpu", progress=False)
        got, want = _state(tmp_path / name), _expected(data, family)
        assert all(torch.equal(got[n], want[n]) for n in want), name
    assert _state(tmp_path / "bf16")["model.norm.weight"].dtype == torch.bfloat16


def test_tied_embeddings(tiny_family_tied: DemoFamily, tmp_path: Path) -> None:
    data = _recipe(tiny_family_tied, "ties_sv")
    run_merge(plan_merge(parse_recipe(data)), out=tmp_path / "out", device="cpu", progress=False)
    got = _state(tmp_path / "out")
    assert "lm_head.weight" not in got
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is True
    want = _expected(data, tiny_family_tied)
    assert all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("tokenizer_source", ["ct", "base"])
def test_extended_vocabulary(tiny_family_extended: DemoFamily, tmp_path: Path, tokenizer_source: str) -> None:
    family = tiny_family_extended
    data = _recipe(family, "ties", tokenizer_source=tokenizer_source)
    out = tmp_path / tokenizer_source
    plan = plan_merge(parse_recipe(data))
    run_merge(plan, out=out, device="cpu", progress=False)
    got = _state(out)
    base, ct, sft = _state(family.base), _state(family.ct), _state(family.sft)
    rows = base["model.embed_tokens.weight"].shape[0]
    extra = ct["model.embed_tokens.weight"].shape[0] - rows
    assert extra == 16
    config = json.loads((out / "config.json").read_text())
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    n_ids = max([*tokenizer["model"]["vocab"].values(), *[t["id"] for t in tokenizer["added_tokens"]]]) + 1
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if tokenizer_source == "ct":
            # mergekit's rule: models without the added tokens take the CT's rows; the whole tensor is merged
            added = ct[name][rows:]
            merged = get_method("ties").fn(
                [ct[name], torch.cat([sft[name], added])],
                torch.cat([base[name], added]),
                weights=[1.0, 0.7],
                densities=[0.3, 0.3],
                normalize=True,
                lambda_=1.0,
            )
            assert got[name].shape[0] == rows + extra
            assert torch.equal(got[name], merged)
            assert torch.equal(got[name][rows:], added)  # zero task vectors there: the CT's rows
        else:
            shared = get_method("ties").fn(
                [ct[name][:rows], sft[name]],
                base[name],
                weights=[1.0, 0.7],
                densities=[0.3, 0.3],
                normalize=True,
                lambda_=1.0,
            )
            assert torch.equal(got[name], shared)
            assert got[name].shape[0] == rows
    assert config["vocab_size"] == got["model.embed_tokens.weight"].shape[0] == n_ids
    if tokenizer_source == "base":
        assert any("dropped" in w for w in plan.warnings)


def test_model_scope_slack(tiny_family: DemoFamily, tmp_path: Path) -> None:
    per_tensor = _recipe(tiny_family, "ties_sv")
    per_model = {**per_tensor, "parameters": {"slack": 0.2, "slack_scope": "model"}}
    a = run_merge(plan_merge(parse_recipe(per_tensor)), out=tmp_path / "t", device="cpu", progress=False)
    b = run_merge(plan_merge(parse_recipe(per_model)), out=tmp_path / "m", device="cpu", progress=False)
    ta, tb = a.report.totals(), b.report.totals()
    assert ta.conflicts == tb.conflicts  # the same conflicts, ranked differently
    conflicts = tb.conflicts[1]
    assert tb.rescued[1] == -(-conflicts * 2 // 10)  # ceil(0.2 * |C|) across the whole model
    assert ta.rescued[1] >= tb.rescued[1]  # per-tensor ceilings round up in every tensor
    assert _state(tmp_path / "t").keys() == _state(tmp_path / "m").keys()


def test_byte_identical_twice_and_report(tiny_family: DemoFamily, tmp_path: Path) -> None:
    runner = CliRunner()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny_family, "ties_sv")))
    for name in ("a", "b"):
        result = runner.invoke(
            app, ["-q", "merge", str(recipe), "--out", str(tmp_path / name), "--device", "cpu", "--shard-size", "100KB"]
        )
        assert result.exit_code == 0, result.output
        assert "discarded by the election" in result.stdout
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    report = json.loads((tmp_path / "a" / "merge_report.json").read_text())
    sft = str(tiny_family.sft)
    totals = report["totals"]
    assert report["protected"] == [sft]
    assert totals["elements"] == sum(t["elements"] for t in report["tensors"].values())
    assert totals["rescued"][sft] > 0
    assert totals["protected_discarded"][sft] == totals["conflicts"][sft] - totals["rescued"][sft]
    assert 0 < report["shares"]["protected_discarded"][sft] < 1


def test_plain_mergekit_config_runs_unchanged(tiny_family: DemoFamily, tmp_path: Path) -> None:
    # A config as mergekit users write it: base listed among the models, no roles, int8_mask,
    # and mergekit's `model:` spelling of tokenizer_source.
    config = tmp_path / "mergekit.yml"
    config.write_text(f"""models:
  - model: {tiny_family.ct}
    parameters: {{density: 0.3, weight: 1.0}}
  - model: {tiny_family.sft}
    parameters: {{density: 0.3, weight: 0.7}}
  - model: {tiny_family.base}
merge_method: ties
base_model: {tiny_family.base}
parameters: {{normalize: true, int8_mask: true}}
dtype: float32
tokenizer_source: model:{tiny_family.base}
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["merge", str(config), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # stdout holds the results only (summary, then the output path); timing goes to stderr.
    assert result.stdout.splitlines()[0].startswith("ties: ") and result.stdout.splitlines()[-1] == str(out)
    assert "Merged on cpu" in result.stderr and "Merged on" not in result.stdout
    got = _state(out)
    for name, tensor in _expected(_recipe(tiny_family, "ties"), tiny_family).items():  # normalize: mergekit's default
        assert torch.equal(got[name], tensor), name
    quiet = CliRunner().invoke(
        app, ["-q", "merge", str(config), "--out", str(tmp_path / "q"), "--device", "cpu", "--json"]
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""
    printed = json.loads(quiet.stdout)
    assert printed["out"] == str(tmp_path / "q") and printed["files"] == [str(tmp_path / "q" / "model.safetensors")]
    assert printed["totals"]["elements"] == sum(t.numel() for t in got.values())


def test_stats_match_direct_method_call(tiny_family: DemoFamily, tmp_path: Path) -> None:
    data = _recipe(tiny_family, "ties")
    result = run_merge(plan_merge(parse_recipe(data)), out=tmp_path / "o", device="cpu", progress=False)
    base, ct, sft = _state(tiny_family.base), _state(tiny_family.ct), _state(tiny_family.sft)
    name = "model.layers.1.self_attn.q_proj.weight"
    stats = TensorStats()
    get_method("ties").fn(
        [ct[name], sft[name]],
        base[name],
        weights=[1.0, 0.7],
        densities=[0.3, 0.3],
        normalize=True,
        lambda_=1.0,
        stats=stats,
        protect=[1],
    )
    assert result.report.tensors[name] == stats
    assert stats.kept == [int(0.3 * base[name].numel())] * 2


def test_bin_input_merges_like_safetensors(tiny_family: DemoFamily, tmp_path: Path) -> None:
    import shutil

    sft_bin = tmp_path / "sft-bin"
    shutil.copytree(tiny_family.sft, sft_bin)
    torch.save(load_file(sft_bin / "model.safetensors"), sft_bin / "pytorch_model.bin")
    (sft_bin / "model.safetensors").unlink()
    data = _recipe(tiny_family, "ties_sv")
    run_merge(plan_merge(parse_recipe(data)), out=tmp_path / "st", device="cpu", progress=False)
    data["models"][1]["model"] = str(sft_bin)
    run_merge(plan_merge(parse_recipe(data)), out=tmp_path / "bin", device="cpu", progress=False)
    assert (tmp_path / "st" / "model.safetensors").read_bytes() == (tmp_path / "bin" / "model.safetensors").read_bytes()
    assert not list((tmp_path / "bin").glob("*.bin"))  # outputs are safetensors only


def test_card_rebuilt_from_output_with_eval_results(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from huggingface_hub import EvalResult, ModelCard

    from registry.card import build_card_for_output

    out = tmp_path / "out"
    run_merge(plan_merge(parse_recipe(_recipe(tiny_family, "ties_sv"))), out=out, device="cpu", progress=False)
    assert str(build_card_for_output(out)) == (out / "README.md").read_text()  # same card as the merge wrote
    result = EvalResult(
        task_type="text-classification",
        dataset_type="Davlan/sib200",
        dataset_name="SIB-200",
        metric_type="accuracy",
        metric_value=0.5,
    )
    card = build_card_for_output(out, eval_results=[result], repo_id="lab/tiny-merge")
    data = ModelCard(str(card)).data
    assert data.eval_results[0].metric_value == 0.5 and data.model_name == "tiny-merge"
    assert "discarded by the election" in card.text


def test_method_failure_says_what_to_do() -> None:
    from registry.merge.engine import _fix_for

    assert "--device cpu" in _fix_for(torch.OutOfMemoryError("CUDA out of memory"), "cuda")
    assert "more RAM" in _fix_for(torch.OutOfMemoryError("out of memory"), "cpu")
    assert "MERGELING_DEBUG=1" in _fix_for(ValueError("shapes"), "cpu")


def test_multilingual_three_inputs(tiny_family: DemoFamily, tmp_path: Path) -> None:
    # CT-mn + CT-ug + SFT: two CT inputs (the second a perturbed copy of the first) and the protected SFT.
    import shutil

    from safetensors.torch import save_file

    ct2 = tmp_path / "ct2"
    shutil.copytree(tiny_family.ct, ct2)
    generator = torch.Generator().manual_seed(7)
    state = {
        k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in load_file(ct2 / "model.safetensors").items()
    }
    save_file(state, ct2 / "model.safetensors", metadata={"format": "pt"})
    data = _recipe(tiny_family, "ties_sv")
    data["models"] = [
        {"model": str(tiny_family.ct), "role": "ct", "language": "khk_Cyrl", "parameters": {"density": 0.3}},
        {"model": str(ct2), "role": "ct", "language": "uig_Arab", "parameters": {"density": 0.3}},
        {"model": str(tiny_family.sft), "role": "sft", "parameters": {"density": 0.3}},
    ]
    recipe = parse_recipe(data)
    out = tmp_path / "out"
    result = run_merge(plan_merge(recipe), out=out, device="cpu", progress=False)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["inputs"] == [str(tiny_family.ct), str(ct2), str(tiny_family.sft)]
    assert report["protected"] == [str(tiny_family.sft)] and report["roles"] == ["ct", "ct", "sft"]
    assert set(report["totals"]["kept"]) == set(report["inputs"])
    assert result.report.totals().elements == sum(t.numel for t in plan_merge(recipe).tensors)
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.language == ["mn", "ug", "en"]
    spec = get_method("ties_sv")
    base, a, b, c = (_state(p) for p in (tiny_family.base, tiny_family.ct, ct2, tiny_family.sft))
    got = _state(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    want = spec.fn(
        [a[name].float(), b[name].float(), c[name].float()],
        base[name].float(),
        weights=[1.0] * 3,
        densities=[0.3] * 3,
        normalize=spec.default_normalize,
        lambda_=spec.default_lambda,
        protect=[2],
        slack=0.2,
    )
    assert torch.equal(got[name], want.to(got[name].dtype))
