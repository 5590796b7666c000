"""transformers, datasets and ModelCard helpers through HF_ENDPOINT (each in a client subprocess).

Module-level helpers read HF_ENDPOINT at import, so these clients run in fresh interpreters with
`hub.env()` (see tests/_fixtures/hub.py); the uploads that prepare them use `hub.api()` here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._fixtures.hub import HubHandle


def test_model_card_load_push_and_metadata_update(hub: HubHandle) -> None:
    hub.api().create_repo("alice/carded")
    code = """
from huggingface_hub import ModelCard, ModelCardData, metadata_update, HfApi
card = ModelCard.from_template(ModelCardData(language="bn", license="mit", tags=["mergeling-ct"], base_model="meta-llama/Llama-2-7b-hf"), model_description="tiny")
card.push_to_hub("alice/carded")
loaded = ModelCard.load("alice/carded")
assert loaded.data.language == "bn" and loaded.data.tags == ["mergeling-ct"], loaded.data
metadata_update("alice/carded", {"mergeling": {"tokens": 123}, "tags": ["mergeling-ct", "extra"]}, overwrite=True)
again = ModelCard.load("alice/carded")
print(again.data.to_dict()["mergeling"]["tokens"], *sorted(again.data.tags))
"""
    out = hub.run_python(code).stdout.split()
    assert out == ["123", "extra", "mergeling-ct"]
    info = hub.api().model_info("alice/carded")
    assert info.card_data is not None and info.card_data.license == "mit"
    assert {"mergeling-ct", "extra", "license:mit", "base_model:meta-llama/Llama-2-7b-hf", "bn"} <= set(info.tags)


def test_metadata_update_creates_a_card_where_none_exists(hub: HubHandle) -> None:
    hub.api().create_repo("alice/bare")
    hub.run_python(
        'from huggingface_hub import metadata_update\nmetadata_update("alice/bare", {"license": "apache-2.0"})'
    )
    assert hub.api().model_info("alice/bare").card_data.license == "apache-2.0"


def test_transformers_from_pretrained_through_hf_endpoint(hub: HubHandle, tmp_path: Path) -> None:
    from registry.lab.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "tiny", seed=3)
    api = hub.api()
    api.create_repo("alice/tiny-llama")
    sha = api.upload_folder(folder_path=str(folder), repo_id="alice/tiny-llama").oid
    code = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("alice/tiny-llama")
model = AutoModelForCausalLM.from_pretrained("alice/tiny-llama", revision="{sha}")
ids = tok("hello world", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
print(model.config.hidden_size, logits.shape[-1], round(float(logits.float().abs().sum()), 3))
"""
    out = hub.run_python(code, timeout=240).stdout.split()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        local = model(tok("hello world", return_tensors="pt").input_ids).logits
    assert out == [str(model.config.hidden_size), str(local.shape[-1]), str(round(float(local.float().abs().sum()), 3))]


def test_datasets_load_dataset_jsonl_configs_and_parquet(hub: HubHandle, tmp_path: Path) -> None:
    rows = {"train": [{"text": f"t{i}", "label": i % 3} for i in range(7)], "test": [{"text": "x", "label": 1}]}
    folder = tmp_path / "ds"
    (folder / "data").mkdir(parents=True)
    for split, items in rows.items():
        (folder / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (folder / "extra").mkdir()
    (folder / "extra" / "more.jsonl").write_text(json.dumps({"text": "m", "label": 0}) + "\n")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
        "  - split: test\n    path: data/test.jsonl\n- config_name: extra\n  data_files: extra/*.jsonl\n---\n# d\n"
    )
    api = hub.api()
    api.create_repo("lab/jsonl-data", repo_type="dataset")
    api.upload_folder(folder_path=str(folder), repo_id="lab/jsonl-data", repo_type="dataset")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq" / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "label": [0, 1, 2]}),
        tmp_path / "pq" / "data" / "train-00000-of-00001.parquet",
    )
    api.create_repo("lab/parquet-data", repo_type="dataset")
    api.upload_folder(folder_path=str(tmp_path / "pq"), repo_id="lab/parquet-data", repo_type="dataset")
    code = """
import datasets
print(sorted(datasets.get_dataset_config_names("lab/jsonl-data")))
ds = datasets.load_dataset("lab/jsonl-data", "main")
print(ds["train"].num_rows, ds["test"].num_rows, ds["train"][6]["label"])
print(datasets.load_dataset("lab/jsonl-data", "extra", split="train")[0]["text"])
stream = datasets.load_dataset("lab/jsonl-data", "main", split="train", streaming=True)
print(sum(1 for _ in stream))
print(list(datasets.load_dataset("lab/parquet-data", split="train")["label"]))
"""
    out = hub.run_python(code, timeout=240).stdout.splitlines()
    assert out == ["['extra', 'main']", "7 1 0", "m", "7", "[0, 1, 2]"]


@pytest.mark.shared_data
def test_seed_data_serves_shared_data_to_load_dataset(hub: HubHandle, shared_data: Path) -> None:
    from registry.datarepo import seed_data_repo

    sha = seed_data_repo(hub.client(), shared_data, repo_id="lab/eval-data", progress=False)
    files = hub.client().list_files("lab/eval-data", repo_type="dataset", revision=sha)
    assert "sib200/ben_Beng/test.jsonl" in files and "manifest.json" in files
    code = """
import datasets
ds = datasets.load_dataset("lab/eval-data", "sib200-ben_Beng")
print(ds["test"].num_rows, ds["validation"].num_rows, ds["train"].num_rows)
"""
    assert hub.run_python(code, timeout=240).stdout.split() == ["204", "99", "701"]
