"""Bad inputs through `registry merge`: a clear error naming the problem, exit 1, nothing left behind."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.tiny import DemoFamily

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


NARROW = {"COLUMNS": "40"}  # errors stay one line whatever the terminal width


def _family_copy(family: DemoFamily, root: Path) -> DemoFamily:
    for name in ("base", "ct", "sft"):
        shutil.copytree(getattr(family, name), root / name)
    return DemoFamily(base=root / "base", ct=root / "ct", sft=root / "sft")


def _recipe(family: DemoFamily, **change: object) -> dict:
    data = {
        "merge_method": "ties_sv",
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ct), "role": "ct", "parameters": {"weight": 1.0, "density": 0.2}},
            {"model": str(family.sft), "role": "sft", "parameters": {"weight": 1.0, "density": 0.2}},
        ],
        "parameters": {"slack": 0.05},
    }
    data.update(change)
    return data


def _edit_weights(model: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(model / "model.safetensors")
    edit(state)
    save_file(state, model / "model.safetensors", metadata={"format": "pt"})


def _edit_config(model: Path, **values: object) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(values)
    (model / "config.json").write_text(json.dumps(config))


def _shape_mismatch(f: DemoFamily) -> None:
    _edit_weights(f.ct, lambda s: s.__setitem__(Q_PROJ, s[Q_PROJ][:, :-1].contiguous()))


def _missing_tensor(f: DemoFamily) -> None:
    _edit_weights(f.sft, lambda s: s.pop("model.layers.1.mlp.down_proj.weight"))


def _nan(f: DemoFamily) -> None:
    def edit(state: dict[str, torch.Tensor]) -> None:
        state["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")

    _edit_weights(f.ct, edit)


def _truncated(f: DemoFamily) -> None:
    path = f.sft / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _lying_header(f: DemoFamily) -> None:
    path = f.ct / "model.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    begin, end = header[Q_PROJ]["data_offsets"]
    header[Q_PROJ]["data_offsets"] = [begin + 4, end + 4]  # points 4 bytes off, overlapping its neighbour
    text = json.dumps(header).encode()
    text += b" " * (length - len(text)) if len(text) <= length else b""
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


def _wrong_architecture(f: DemoFamily) -> None:
    _edit_config(f.ct, model_type="mistral", architectures=["MistralForCausalLM"])


def _pickle_only(f: DemoFamily) -> None:
    class Gadget:
        def __reduce__(self):
            return (print, ("unpickled!",))

    state = load_file(f.sft / "model.safetensors")
    (f.sft / "model.safetensors").unlink()
    torch.save({**state, "gadget": Gadget()}, f.sft / "pytorch_model.bin")


def _non_float(f: DemoFamily) -> None:
    for model in (f.base, f.ct, f.sft):
        _edit_weights(model, lambda s: s.__setitem__("model.position_ids", torch.arange(8)))


def _unrelated(f: DemoFamily) -> None:
    generator = torch.Generator().manual_seed(99)

    def edit(state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            if tensor.ndim == 2:
                state[name] = 0.02 * torch.randn(tensor.shape, generator=generator)

    _edit_weights(f.sft, edit)


def _no_config(f: DemoFamily) -> None:
    (f.ct / "config.json").unlink()


def _big_tokenizer(f: DemoFamily) -> None:
    tok = json.loads((f.base / "tokenizer.json").read_text())
    top = max(tok["model"]["vocab"].values())
    tok["added_tokens"].append(
        {
            "id": top + 50,
            "content": "<way-out>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (f.base / "tokenizer.json").write_text(json.dumps(tok))


# (id, break the copied family, change the recipe, the words the error must contain)
CASES: list[tuple[str, Callable | None, dict, tuple[str, ...]]] = [
    ("shape-mismatch", _shape_mismatch, {}, (Q_PROJ, "shape", "ct")),
    ("missing-tensor", _missing_tensor, {}, ("lacks", "model.layers.1.mlp.down_proj.weight", "sft")),
    ("nan", _nan, {}, ("NaN/Inf", "model.layers.1.mlp.up_proj.weight", "ct")),
    ("truncated", _truncated, {}, ("truncated", "sft", "model.safetensors")),
    ("lying-header", _lying_header, {}, ("header lies about offsets", Q_PROJ)),
    ("wrong-architecture", _wrong_architecture, {}, ("model_type='mistral'", "different architectures")),
    ("pickle-only", _pickle_only, {}, ("weights_only=True", "nothing was unpickled", "pytorch_model.bin")),
    ("non-float", _non_float, {}, ("model.position_ids", "I64", "float")),
    ("not-same-base", _unrelated, {}, ("does not look like a fine-tune", "sft", "base_model")),
    ("no-config", _no_config, {}, ("no config.json", "ct")),
    ("tokenizer-too-big", _big_tokenizer, {}, ("tokenizer", "ids", "rows", "tokenizer_source")),
    ("unknown-method", None, {"merge_method": "core_space"}, ("'core_space'", "ties_sv")),
    ("density-1.5", None, {"parameters": {"density": 1.5}}, ("parameters.density = 1.5", "(0, 1]")),
    ("slack-negative", None, {"parameters": {"slack": -0.1}}, ("parameters.slack = -0.1", "[0, 1]")),
    ("unknown-key", None, {"merge_methd": "ties"}, ("unknown key `merge_methd`", "merge_method")),
    ("unsupported-feature", None, {"modules": {"text_decoder": {}}}, ("modules", "not supported")),
    ("missing-input", None, {"base_model": "./no/such/dir"}, ("./no/such/dir", "no such directory")),
]


@pytest.mark.parametrize(("case", "breaker", "change", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(
    tiny_family: DemoFamily,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    case: str,
    breaker: Callable | None,
    change: dict,
    needles: tuple[str, ...],
) -> None:
    family = _family_copy(tiny_family, tmp_path / "models")
    if breaker is not None:
        breaker(family)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(family, **change)))
    work = tmp_path / "work"
    work.mkdir()
    out = work / "merged"
    result = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--out", str(out), "--device", "cpu"], env=NARROW)
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message.startswith("Error:"), message
    for needle in needles:
        assert needle in message, (needle, message)
    assert "Traceback" not in result.output
    assert list(work.iterdir()) == []  # no output, no temporary directory
    assert "unpickled!" not in capfd.readouterr().out


def test_output_exists(tiny_family: DemoFamily, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny_family)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["merge", str(recipe), "--out", str(out)])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--out", str(out), "--overwrite", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "recipe.yaml"]


def test_overwrite_never_replaces_an_input(tiny_family: DemoFamily, tmp_path: Path) -> None:
    family = _family_copy(tiny_family, tmp_path / "models")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(family)))
    before = sorted(p.name for p in family.ct.iterdir())
    for out in (family.ct, tmp_path / "models"):
        args = ["-q", "merge", str(recipe), "--out", str(out), "--overwrite", "--device", "cpu"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "would replace the input" in result.output and "choose another --out" in result.output
    assert sorted(p.name for p in family.ct.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "recipe.yaml"]


def test_hub_input_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on loopback: nothing listens, so the Hub client fails fast; an empty cache has no copy.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": "org/base",
                "models": [{"model": "org/ct@main"}, {"model": "org/sft"}],
            }
        )
    )
    result = CliRunner().invoke(app, ["merge", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "org/base" in result.output and "HF_ENDPOINT" in result.output
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tiny_family: DemoFamily, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny_family)))
    assert CliRunner().invoke(app, ["merge", str(recipe)]).exit_code == 2  # no --out
    assert CliRunner().invoke(app, ["merge", str(recipe), "--out", "x", "--device", "tpu"]).exit_code == 2
    assert CliRunner().invoke(app, ["merge", str(tmp_path / "nope.yaml"), "--out", "x"]).exit_code == 2


def test_config_keys_missing_on_one_side_are_not_differences(tiny_family: DemoFamily, tmp_path: Path) -> None:
    family = _family_copy(tiny_family, tmp_path / "models")
    config = json.loads((family.base / "config.json").read_text())
    config.pop("head_dim", None)
    config.pop("num_key_value_heads", None)  # as older Llama-2 configs on the Hub
    (family.base / "config.json").write_text(json.dumps(config))
    _edit_config(family.sft, head_dim=json.loads((family.ct / "config.json").read_text()).get("head_dim", 16))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(family)))
    result = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_gpu(tiny_family: DemoFamily, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny_family)))
    result = CliRunner().invoke(app, ["merge", str(recipe), "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert result.exit_code == 1
    assert "no CUDA device" in result.output and "--device cpu" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_merge_without_tokenizer_warns_and_says_how_to_add_one(tiny_family: DemoFamily, tmp_path: Path) -> None:
    family = _family_copy(tiny_family, tmp_path / "models")
    for file in family.base.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            file.unlink()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(family)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["merge", str(recipe), "--out", str(out), "--device", "cpu"], env=NARROW)
    assert result.exit_code == 0, result.output
    assert f"{family.base} has no tokenizer files, so the merged model will have none" in result.stderr
    assert f"set tokenizer_source: {family.ct}" in result.stderr
    assert not (out / "tokenizer.json").exists()
    fixed = CliRunner().invoke(
        app, ["merge", str(recipe), "--out", str(tmp_path / "out2"), "--set", "tokenizer_source=ct", "--device", "cpu"]
    )
    assert fixed.exit_code == 0 and "no tokenizer" not in fixed.stderr
    assert (tmp_path / "out2" / "tokenizer.json").is_file()
