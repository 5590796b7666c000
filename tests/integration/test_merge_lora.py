"""LoRA adapters as merge inputs: equal to merging the peft merge_and_unload() model; bad adapters refused by name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from registry.errors import CompatibilityError, MergeError
from registry.lab.tiny import DemoFamily
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe

peft = pytest.importorskip("peft")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _state(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def _adapter(base: Path, root: Path, **options: object) -> tuple[Path, Path]:
    """A random LoRA adapter of `base` (saved) and the model peft's merge_and_unload() makes of it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
        modules_to_save=["lm_head"],
        **options,
    )
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(0.05 * torch.randn_like(param))  # lora_B starts at zero: make the update real
    adapter, merged = root / "adapter", root / "merged"
    wrapped.save_pretrained(str(adapter))
    wrapped.merge_and_unload().save_pretrained(str(merged))
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy(base / name, merged / name)
    return adapter, merged


def _recipe(family: DemoFamily, ct: str, method: str = "ties_sv") -> dict:
    return {
        "merge_method": method,
        "base_model": str(family.base),
        "models": [
            {"model": ct, "role": "ct", "parameters": {"weight": 1.0, "density": 0.3}},
            {"model": str(family.sft), "role": "sft", "parameters": {"weight": 0.7, "density": 0.3}},
        ],
        "parameters": {"slack": 0.2},
        "dtype": "float32",
    }


def _merge(data: dict, out: Path) -> dict[str, torch.Tensor]:
    run_merge(plan_merge(parse_recipe(data)), out=out, device="cpu", progress=False)
    return _state(out)


@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_equals_merged_model(tiny_family: DemoFamily, tmp_path: Path, rslora: bool) -> None:
    adapter, merged = _adapter(tiny_family.base, tmp_path, use_rslora=rslora)
    want = _merge(_recipe(tiny_family, str(merged)), tmp_path / "from-merged")
    for ref in (str(adapter), f"{tiny_family.base}+{adapter}"):  # an adapter ref, and mergekit's model+lora
        got = _merge(_recipe(tiny_family, ref), tmp_path / f"out-{len(ref)}")
        assert got.keys() == want.keys()
        for name in want:
            assert float((got[name] - want[name]).abs().max()) <= 1e-5, name


def test_write_adapted_equals_merge_and_unload(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from registry.io.lora import write_adapted

    adapter, merged = _adapter(tiny_family.base, tmp_path)
    out = write_adapted(tiny_family.base, adapter, tmp_path / "adapted")
    got, want = _state(out), _state(merged)
    assert got.keys() == want.keys()
    for name in want:
        assert float((got[name] - want[name]).abs().max()) <= 1e-6, name
    assert json.loads((out / "config.json").read_text()) == json.loads((tiny_family.base / "config.json").read_text())
    assert (out / "tokenizer.json").is_file()


def test_adapter_view_equals_peft_weights(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from registry.io.lora import open_adapted

    adapter, merged = _adapter(tiny_family.base, tmp_path)
    reference = _state(merged)
    with open_adapted(tiny_family.base, adapter) as view:
        assert set(view.tensors) == set(reference)
        changed = 0
        for name, want in reference.items():
            got = view.read(name)
            assert float((got - want).abs().max()) <= 1e-6, name
            changed += not torch.equal(got, load_file(str(tiny_family.base / "model.safetensors"))[name])
        assert changed >= 4  # q/v/down projections, embeddings, lm_head (modules_to_save)


def test_adapter_of_another_base_refused(tiny_family: DemoFamily, tmp_path: Path) -> None:
    adapter, _ = _adapter(tiny_family.base, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "org/other-base"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CompatibilityError, match=r"is a LoRA adapter of org/other-base, but the recipe's base_model"):
        plan_merge(parse_recipe(_recipe(tiny_family, str(adapter))))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"use_dora": True}, "DoRA (use_dora: true) is not supported"),
        ({"peft_type": "IA3", "target_modules": ["q_proj"], "feedforward_modules": []}, "adapter type IA3"),
        ({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}, "adapter type PREFIX_TUNING"),
    ],
)
def test_unsupported_adapters_refused_by_name(
    tiny_family: DemoFamily, tmp_path: Path, change: dict, needle: str
) -> None:
    adapter, _ = _adapter(tiny_family.base, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    if change.get("peft_type") not in (None, "LORA"):
        config = {"peft_type": change["peft_type"], "base_model_name_or_path": config["base_model_name_or_path"]}
    config.update(change)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises((CompatibilityError, MergeError), match=re.escape(needle)):
        _merge(_recipe(tiny_family, str(adapter)), tmp_path / "out")
    assert not (tmp_path / "out").exists()
