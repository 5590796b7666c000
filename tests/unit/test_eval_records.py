"""Results records, the results cache, and EvalResults for model cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.errors import EvaluationError
from registry.evaluate.cache import ResultCache, cache_key, default_cache_dir
from registry.evaluate.model_index import to_eval_results
from registry.evaluate.records import EvalRecord, MetricValue, ModelIdentity, TaskResult, load_record


def make_task(name: str = "sib200_ben_Beng", *, acc: float = 0.5, n: int = 204, total: int = 204) -> TaskResult:
    return TaskResult(
        task=name,
        task_hash="ab" * 32,
        num_fewshot=5,
        n_samples=n,
        n_total=total,
        limit=None if n == total else n,
        metrics={"acc": MetricValue(value=acc, stderr=0.03, higher_is_better=True)},
        duration_s=1.5,
    )


def make_record(*tasks: TaskResult, limit: int | None = None, path: str = "/m/ct") -> EvalRecord:
    return EvalRecord(
        model=ModelIdentity(reference=path, local_path=path, weights_hash="cd" * 32),
        suite="recipes/eval/ben_Beng.yaml",
        language="ben_Beng",
        data_source="/data",
        lm_eval_version="0.4.13",
        device="cpu",
        limit=limit,
        duration_s=2.0,
        created_at="2026-01-01T00:00:00Z",
        tasks=tasks or (make_task(),),
    )


def test_record_round_trip(tmp_path: Path) -> None:
    record = make_record(make_task(), make_task("flores_ben_Beng"))
    record.save(tmp_path / "out" / "r.json")
    assert load_record(tmp_path / "out" / "r.json") == record
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert data["schema_version"] == 1 and data["lm_eval_version"] == "0.4.13"
    assert set(data["tasks"][0]) >= {"task_hash", "n_samples", "n_total", "limit", "metrics", "duration_s"}
    assert data["tasks"][0]["metrics"]["acc"] == {"value": 0.5, "stderr": 0.03, "higher_is_better": True}


def test_record_is_strict() -> None:
    with pytest.raises(ValidationError):
        EvalRecord.model_validate({**make_record().model_dump(), "extra": 1})
    with pytest.raises(ValidationError):
        EvalRecord.model_validate({**make_record().model_dump(), "tasks": []})


def test_limited_flags() -> None:
    assert not make_record().limited
    assert make_record(limit=5).limited
    assert make_record(make_task(n=20)).limited and make_task(n=20).limited
    assert not make_task().limited


def test_model_identity_keys() -> None:
    local = ModelIdentity(reference="./ct", local_path="/x/ct", weights_hash="ef" * 32)
    hub = ModelIdentity(reference="org/m@v1", repo_id="org/m", revision="v1", sha="1234567890ab")
    assert local.key == "files:" + "ef" * 32 and local.label == "ct"
    assert hub.key == "hub:org/m@1234567890ab" and hub.label == "org/m@12345678"


def test_load_record_errors(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        load_record(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"model": 3}')
    with pytest.raises(EvaluationError, match="not a `registry eval` results file"):
        load_record(tmp_path / "bad.json")


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    args = {"model_key": "files:x", "task_hash": "t", "num_fewshot": 5, "lm_eval_version": "0.4.13"}
    key, key_limited = cache_key(limit=None, **args), cache_key(limit=10, **args)
    assert key != key_limited != cache_key(limit=None, **{**args, "num_fewshot": 0})
    assert cache.get(key) is None
    cache.put(key, make_task().model_copy(update={"cached": True}))
    assert cache.get(key) == make_task()  # stored as not-cached
    assert cache.get(key_limited) is None
    next(tmp_path.rglob("*.json")).write_text("{broken")
    assert cache.get(key) is None


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELING_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "eval"


def test_eval_results_label_limits() -> None:
    full = to_eval_results(make_record(make_task()))
    assert len(full) == 1
    r = full[0]
    assert (r.metric_type, r.metric_value, r.dataset_split, r.dataset_config) == ("acc", 0.5, "test", "ben_Beng")
    assert "limit" not in r.metric_name and "limit" not in (r.dataset_args or {})
    limited = to_eval_results(make_record(make_task(n=20)))[0]
    assert limited.dataset_split == "test[:20]"
    assert "--limit: 20 of 204" in limited.metric_name and "--limit" in limited.dataset_name
    assert limited.dataset_args["limit"] == 20


def test_eval_results_fill_a_model_card() -> None:
    from huggingface_hub import ModelCardData

    results = to_eval_results(make_record(make_task(), make_task("flores_ben_Beng", acc=0.7)))
    data = ModelCardData(model_name="tiny-merge", eval_results=results).to_dict()
    metrics = [m for entry in data["model-index"][0]["results"] for m in entry["metrics"]]
    assert sorted(m["value"] for m in metrics) == [0.5, 0.7]


def test_eval_results_source() -> None:
    r = to_eval_results(make_record(), source_url="https://hub.example/org/m/blob/main/results.json")[0]
    assert r.source_name == "Mergeling registry eval" and r.source_url.endswith("results.json")
    assert to_eval_results(make_record())[0].source_name is None


def test_model_files_to_fetch() -> None:
    from registry.evaluate.sources import model_files_to_fetch

    repo = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
        "optimizer.pt",
        "flax_model.msgpack",
        "images/plot.png",
        "checkpoint-100/model.safetensors",
        "checkpoint-100/config.json",
    ]
    assert model_files_to_fetch(repo) == sorted(
        [
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
    )
    assert model_files_to_fetch(["config.json", "pytorch_model.bin", "optimizer.bin"]) == [
        "config.json",
        "pytorch_model.bin",
    ]


def test_limited_results_stay_labelled_in_card_yaml() -> None:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(model_name="m", eval_results=to_eval_results(make_record(make_task(n=20))))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\nbody\n")
    reloaded = ModelCard(str(card)).data.eval_results
    assert reloaded is not None and reloaded[0].dataset_split == "test[:20]"
    assert "--limit: 20 of 204" in reloaded[0].metric_name
