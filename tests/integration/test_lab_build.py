"""`registry lab build` end to end: real checkpoints that load with transformers and merge with `registry merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.lab.build import LabConfig, build_lab
from tests._fixtures.data import shared_data_dir

# A smaller model than the default and few steps (about 15 s), but enough that CT visibly learns
# Bengali and the deltas are non-trivial. The CLI itself is driven in the synthetic test below.
SMALL = LabConfig(
    languages=("ben_Beng",),
    base_steps=40,
    ct_steps=25,
    sft_steps=10,
    vocab_size=2048,
    hidden_size=64,
    intermediate_size=192,
    num_layers=2,
    batch_size=8,
    sft_seq_len=192,
)


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data not found: the lab build test needs real text (synthetic is tested separately)")
    out = tmp_path_factory.mktemp("lab") / "out"
    result = build_lab(out, config=SMALL, data_dir=data, progress=False)
    assert [c.name for c in result.checkpoints] == ["base", "ct-ben_Beng", "sft"]
    return out


@pytest.mark.slow
def test_checkpoints_load_and_generate(lab_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("base", "ct-ben_Beng", "sft"):
        path = lab_dir / name
        for file in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"):
            assert (path / file).is_file(), f"{name}/{file} missing"
        model = AutoModelForCausalLM.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        assert model.config.vocab_size == len(tokenizer)
        assert 0.2e6 < model.num_parameters() < 10e6
        inputs = tokenizer("Topic classification. Sentence: The team won.\nTopic:", return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or out[0, -1] == tokenizer.eos_token_id


@pytest.mark.slow
def test_manifest_records_small_deltas_and_falling_losses(lab_dir: Path) -> None:
    manifest = json.loads((lab_dir / "lab.json").read_text(encoding="utf-8"))
    assert manifest["synthetic"] is False
    assert not any("flores" in s or "/test" in s or "/dev" in s for s in manifest["sources"])
    entries = manifest["checkpoints"]
    assert list(entries) == ["base", "ct-ben_Beng", "sft"]
    assert entries["base"]["delta_vs_base"] is None
    assert entries["base"]["train"]["last_loss"] < entries["base"]["train"]["first_loss"]
    for name in ("ct-ben_Beng", "sft"):
        delta = entries[name]["delta_vs_base"]
        assert 0.0 < delta["total"] < 0.5, (name, delta)
        assert set(delta) >= {"total", "embed_tokens", "lm_head", "self_attn", "mlp", "norm"}


@pytest.mark.slow
def test_cards_and_tokenizer(lab_dir: Path) -> None:
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    ct = ModelCard.load(str(lab_dir / "ct-ben_Beng" / "README.md")).data
    assert ct.language == ["bn"] and "mergeling-ct" in ct.tags and ct.base_model == "mergeling-lab/tiny-base"
    sft = ModelCard.load(str(lab_dir / "sft" / "README.md")).data
    assert sft.language == ["en"] and "mergeling-sft" in sft.tags and sft.base_model == "mergeling-lab/tiny-base"
    tokenizer = AutoTokenizer.from_pretrained(str(lab_dir / "ct-ben_Beng"))
    for text in ("আমি বাংলায় গান গাই।", "བཀྲ་ཤིས་བདེ་ལེགས།", "ياخشىمۇسىز، دۇنيا!"):
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


@pytest.mark.slow
def test_ct_learned_bengali(lab_dir: Path) -> None:
    """On held-out Bengali (FLORES devtest, never trained on), CT has lower loss per byte than the base."""
    base = _nll_per_byte(lab_dir / "base", _flores("ben_Beng"))
    ct = _nll_per_byte(lab_dir / "ct-ben_Beng", _flores("ben_Beng"))
    assert ct < base - 0.1, (base, ct)


@pytest.mark.slow
def test_lab_checkpoints_merge_with_registry_merge(lab_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"""merge_method: ties_sv
base_model: {lab_dir / "base"}
dtype: float32
tokenizer_source: ct
models:
  - model: {lab_dir / "ct-ben_Beng"}
    role: ct
    language: ben_Beng
    parameters: {{weight: 1.0, density: 0.2}}
  - model: {lab_dir / "sft"}
    role: sft
    parameters: {{weight: 1.0, density: 0.2}}
parameters: {{normalize: true, lambda: 1.0, slack: 0.1}}
""",
        encoding="utf-8",
    )
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["-q", "merge", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    AutoModelForCausalLM.from_pretrained(str(out))
    merged = _load_all(out)
    ct = load_file(str(lab_dir / "ct-ben_Beng" / "model.safetensors"))
    sft = load_file(str(lab_dir / "sft" / "model.safetensors"))
    assert merged.keys() == ct.keys()
    assert any(not merged[k].equal(ct[k]) for k in ct) and any(not merged[k].equal(sft[k]) for k in sft)


@pytest.mark.slow
def test_resume_keeps_finished_stages(lab_dir: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    copy = tmp_path / "lab"
    shutil.copytree(lab_dir, copy)
    (copy / "sft" / "lab_train.json").unlink()  # as if the build had stopped during SFT
    before = {name: load_file(str(copy / name / "model.safetensors")) for name in ("base", "ct-ben_Beng", "sft")}
    result = build_lab(copy, config=SMALL, data_dir=shared_data_dir(), resume=True, progress=False)
    after = {name: load_file(str(copy / name / "model.safetensors")) for name in ("base", "ct-ben_Beng", "sft")}
    for name in ("base", "ct-ben_Beng"):
        assert all(after[name][k].equal(before[name][k]) for k in before[name]), name
    # SFT was retrained with the same seed: deterministic, so the same weights again.
    assert all(after["sft"][k].equal(before["sft"][k]) for k in before["sft"])
    assert (copy / "sft" / "lab_train.json").is_file()
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["checkpoints"]["sft"]["train"]["steps"] == SMALL.sft_steps


def test_synthetic_fallback_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import ModelCard

    work = tmp_path / "nowhere" / "main"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # no ../shared/data beside it, no --data-dir
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(
        app, ["-q", "lab", "build", "--out", str(out), "--languages", "khk_Cyrl", "--steps", "base=2,ct=2,sft=2"]
    )
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.stderr
    assert "Training 6 steps in all" in result.stderr  # the time it will take is said up front
    assert "SYNTHETIC DATA" in result.stdout
    assert json.loads((out / "lab.json").read_text(encoding="utf-8"))["synthetic"] is True
    assert "synthetic-data" in ModelCard.load(str(out / "ct-khk_Cyrl" / "README.md")).data.tags

    again = CliRunner().invoke(app, ["lab", "build", "--out", str(out), "--steps", "base=1,ct=1,sft=1"])
    assert again.exit_code == 1
    assert "is not empty" in again.stderr and "--overwrite" in again.stderr and "--resume" in again.stderr


def test_ct_then_sft_is_built_on_every_ct_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ct-sft: the SFT stage (same data, steps, seed) run on the final CT and on each saved CT step."""
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    work = tmp_path / "nowhere" / "main"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # synthetic text: this checks the pipeline, not the numbers
    out = tmp_path / "lab"
    args = ["-q", "lab", "build", "--out", str(out), "--languages", "ben_Beng", "--steps", "base=2,ct=4,sft=3",
            "--ct-save-steps", "2", "--ct-sft"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Training 15 steps in all" in result.stderr  # 2 + 4 + 3 * (SFT + 2 CT-then-SFT)
    manifest = json.loads((out / "lab.json").read_text(encoding="utf-8"))
    entries = manifest["checkpoints"]
    assert list(entries) == ["base", "ct-ben_Beng", "sft", "ct-ben_Beng-sft", "ct-ben_Beng-step2-sft"]
    for name, parent in (("ct-ben_Beng-sft", "ct-ben_Beng"), ("ct-ben_Beng-step2-sft", "ct-ben_Beng-step2")):
        entry = entries[name]
        assert entry["role"] == "ct_sft" and entry["language"] == "ben_Beng"
        assert entry["parent"] == f"mergeling-lab/tiny-{parent}" and entry["train"]["steps"] == 3
        card = ModelCard.load(str(out / name / "README.md")).data
        assert "mergeling-ct-sft" in card.tags and card.base_model == f"mergeling-lab/tiny-{parent}"
        assert card.language == ["bn"]
        # It started from its CT: it is nearer to that CT than the SFT (trained from the base) is.
        mine, ct, sft = (load_file(str(out / n / "model.safetensors")) for n in (name, parent, "sft"))
        key = "model.layers.0.mlp.down_proj.weight"
        assert (mine[key] - ct[key]).norm() < (sft[key] - ct[key]).norm()
    assert entries["sft"]["train"]["steps"] == 3 and "parent" not in entries["sft"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "base=0"], "base_steps"),
        (["--steps", "warmup=3"], "STAGE=N"),
        (["--languages", "eng_Latn"], "non-English"),
        (["--languages", "ben_Beng,xxx_Yyyy"], "not in the FLORES-200 list"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["lab", "build", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o").exists()


def _flores(lang: str) -> list[str]:
    data = shared_data_dir()
    assert data is not None
    with (data / "flores200" / "devtest" / f"{lang}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(32), handle, strict=False)]


def _nll_per_byte(model_dir: Path, texts: list[str]) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    total = 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
    return total / sum(len(t.encode()) for t in texts)


def _load_all(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors: dict = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def test_push_to_hub_then_registry_add_verifies_against_the_card(lab_dir: Path, hub) -> None:  # type: ignore[no-untyped-def]
    token = hub.make_token("mergeling-lab", write=True)  # the namespace the lab's cards name
    runner = CliRunner()
    pushed = runner.invoke(app, ["-q", "lab", "push", str(lab_dir), "--endpoint", hub.url, "--token", token])
    assert pushed.exit_code == 0, pushed.output
    repos = dict(line.split("@") for line in pushed.stdout.split())
    assert set(repos) == {"mergeling-lab/tiny-base", "mergeling-lab/tiny-ct-ben_Beng", "mergeling-lab/tiny-sft"}
    client = hub.client(token)
    for repo, sha in repos.items():
        assert client.head_sha(repo) == sha
    local = (lab_dir / "ct-ben_Beng" / "model.safetensors").read_bytes()
    assert client.read_file("mergeling-lab/tiny-ct-ben_Beng", "model.safetensors") == local

    common = ["--endpoint", hub.url, "--token", token]
    added = runner.invoke(
        app,
        [
            "add",
            "ct",
            "mergeling-lab/tiny-ct-ben_Beng",
            "--language",
            "ben_Beng",
            "--base",
            "mergeling-lab/tiny-base",
            *common,
        ],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["list", "--json", *common])
    assert "mergeling-lab/tiny-ct-ben_Beng" in listed.stdout


def test_push_refuses_a_directory_without_lab_json(tmp_path: Path, hub) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, ["lab", "push", str(tmp_path), "--endpoint", hub.url, "--token", hub.token])
    assert result.exit_code == 1
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "no lab.json" in message and "registry lab build --out" in message
