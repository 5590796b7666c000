"""The Space's library pieces without Gradio: size checks, prompts, streaming, bot client, merge recipe, config."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.errors import RecipeError
from registry.lab.tiny import DemoFamily
from registry.recipe import parse_recipe
from space.bot_client import JOB_COLUMNS, BotClient, job_rows
from space.catalog_view import short_ref
from space.config import SpaceConfig
from space.errors import BotUnavailableError, ModelTooLargeError, PromptError, SpaceError, UnsupportedModelError
from space.examples import SIB_PROMPT, load_examples
from space.generation import check_max_new_tokens, encode_prompt, stream_text
from space.merge_preview import available_methods, layer_of, local_recipe, per_layer, screen_recipe
from space.models import (
    LoadedModel,
    ModelLoader,
    check_architecture,
    check_fits,
    format_bytes,
    weights_bytes,
)
from space.services import SpaceServices
from space.submit import card_language


@pytest.fixture(scope="module")
def loaded(tiny_family: DemoFamily) -> LoadedModel:
    return ModelLoader(hub=None, device="cpu").load_dir(tiny_family.sft, key="sft")


def test_size_check_names_size_and_memory() -> None:
    check_fits(repo="a/b", needed=900, budget=1000, free=100, releasable=800)  # fits once the cache is emptied
    with pytest.raises(ModelTooLargeError) as info:
        check_fits(repo="a/big", needed=14_000_000_000, budget=8_000_000_000, free=20_000_000_000, releasable=0)
    assert str(info.value) == (
        "a/big is too large for this Space: its weights take 14.0 GB (safetensors headers) but 8.0 GB of memory is "
        "available to models here (budget 8.0 GB, free 20.0 GB); try a smaller model or run it elsewhere"
    )
    with pytest.raises(ModelTooLargeError, match="500 B of memory"):
        check_fits(repo="a/b", needed=900, budget=1000, free=300, releasable=200)
    assert format_bytes(1_500) == "1.5 kB" and format_bytes(12) == "12 B"


def test_weights_bytes_from_safetensors_metadata() -> None:
    class Metadata:  # the shape of huggingface_hub's SafetensorsRepoMetadata (a value, not our code)
        parameter_count = {"BF16": 1000, "F32": 10}

    assert weights_bytes(Metadata()) == 2040


def test_architecture_refusals() -> None:
    check_architecture({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, repo="a/b")
    with pytest.raises(UnsupportedModelError, match="a/bert is not a causal language model \\(BertModel\\)"):
        check_architecture({"architectures": ["BertModel"], "model_type": "bert"}, repo="a/bert")
    with pytest.raises(UnsupportedModelError, match="a/gpt is a gpt2 model; Mergeling merges and serves Llama"):
        check_architecture(
            {"architectures": ["GPT2LMHeadModel", "GPT2ForCausalLM"], "model_type": "gpt2"}, repo="a/gpt"
        )
    with pytest.raises(UnsupportedModelError, match="no architectures"):
        check_architecture({}, repo="a/empty")


def test_model_references_are_parsed_by_model_ref() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert (
        short_ref(f"a/b@{sha}") == "a/b@0123456" and short_ref("a/b@main") == "a/b@main" and short_ref("a/b") == "a/b"
    )
    for bad in ("a/b@", "a/b@x@y", "not a repo"):
        with pytest.raises(ValueError):
            short_ref(bad)
    services = SpaceServices(SpaceConfig(endpoint="http://127.0.0.1:9", token=None, registry="a/r", device="cpu"))
    assert services.check_generate(" a/b@main ", "hi", 4, 0)[0] == "a/b@main"
    for bad in ("a/b@", "a/b@x@y"):
        with pytest.raises(PromptError, match="revision|'@'"):
            services.check_generate(bad, "hi", 4, 0)
    with pytest.raises(SpaceError, match="--device 'tpu': write auto, cpu, cuda or cuda:N"):
        ModelLoader(hub=None, device="tpu")


def test_prompt_checks(loaded: LoadedModel) -> None:
    assert check_max_new_tokens(8, limit=64) == 8 and check_max_new_tokens(8.0, limit=64) == 8
    for bad in (0, 65, 2.5, None, True):
        with pytest.raises(PromptError, match="max_new_tokens"):
            check_max_new_tokens(bad, limit=64)  # type: ignore[arg-type]
    for empty in ("", "   \n", None):
        with pytest.raises(PromptError, match="the prompt is empty"):
            encode_prompt(loaded, empty, max_new_tokens=4)
    # Byte-level tokenizer: one token per byte plus <s>; the tiny models have a 512-token context.
    assert encode_prompt(loaded, "x" * 500, max_new_tokens=11).shape == (1, 501)
    with pytest.raises(PromptError) as info:
        encode_prompt(loaded, "x" * 500, max_new_tokens=12)
    assert str(info.value) == (
        "the prompt is 501 tokens; with 12 new tokens that exceeds the model's context of 512 tokens: "
        "shorten the prompt or ask for fewer new tokens"
    )


def test_streaming_matches_generate_and_grows(loaded: LoadedModel, tiny_family: DemoFamily) -> None:
    import torch

    pieces = list(stream_text(loaded, "Topic:", max_new_tokens=10))
    assert len(pieces) > 1 and all(b.startswith(a) for a, b in zip(pieces, pieces[1:], strict=False))
    ids = loaded.tokenizer("Topic:", return_tensors="pt").input_ids
    out = loaded.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False, pad_token_id=0
    )
    assert pieces[-1] == loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    sampled = [list(stream_text(loaded, "Topic:", max_new_tokens=10, temperature=1.0, seed=3))[-1] for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded sampling repeats


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bot_client_unreachable_and_unconfigured() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BotUnavailableError, match=f"the bot at {url} is unreachable"):
        BotClient(url, timeout=2).submit("a/b", token="t")
    with pytest.raises(BotUnavailableError, match="no bot is configured"):
        BotClient(None).jobs()
    job = {"id": "j1", "state": "queued", "ct_repo": "a/b", "attempts": 0}
    assert job_rows([job]) == [["j1", "queued", None, None, "a/b", None, None, None, 0, None]]
    assert len(JOB_COLUMNS) == 10


def test_card_language() -> None:
    assert card_language({"language": ["en", "bn"]}) == "ben_Beng"
    assert card_language({"language": "mn"}) == "mon_Mong"  # MC²-trained cards: Traditional script
    assert card_language({"language": ["en"]}) is None and card_language({}) is None


def _sft() -> Any:
    from registry.catalog.entries import ModelRef, SftEntry, sft_entry_id

    return SftEntry(
        id=sft_entry_id(repo="a/sft", revision="main"), repo="a/sft", revision="main", base=ModelRef(repo="a/base"),
        verified=False,
    )  # fmt: skip


def test_methods_come_from_the_engine_registry(tiny_family: DemoFamily) -> None:
    from registry.catalog.entries import CtEntry, ModelRef, ct_entry_id
    from registry.merge.methods import METHODS

    methods = available_methods()
    drivable = [
        n
        for n, s in METHODS.items()
        if not any(f.is_required() for f in s.params.model_fields.values())
        and s.needs_base
        and s.uses_weight
        and (s.max_inputs is None or s.max_inputs >= 2)
    ]
    assert [m.name for m in methods] == drivable and "ties_sv" in drivable and "slerp" not in drivable
    ct = CtEntry(
        id=ct_entry_id(repo="a/ct", revision="main", language="ben_Beng"), repo="a/ct", revision="main",
        base=ModelRef(repo="a/base"), language="ben_Beng", verified=False,
    )  # fmt: skip
    for info in methods:
        recipe = screen_recipe(method=info.name, cts=[ct], sft=_sft(), density=0.3, slack=0.2, ct_weight=0.7)
        assert recipe.merge_method == info.name
        assert (recipe.densities() == (0.3, 0.3)) == info.uses_density
        assert (getattr(recipe.parameters, "slack", None) == 0.2) == info.uses_slack
        assert recipe.weights() == (0.7, 1.0)
        assert [m.model for m in recipe.models] == ["a/ct", "a/sft"] and recipe.base_model == "a/base"
    # The engine's refusals, before anything runs or reaches the bot.
    with pytest.raises(RecipeError, match="density"):
        screen_recipe(method="ties_sv", cts=[ct], sft=_sft(), density=5.0, slack=0.2)
    with pytest.raises(RecipeError, match="slack"):
        screen_recipe(method="ties_sv", cts=[ct], sft=_sft(), density=0.2, slack=3.0)
    # A commit pins the reference; the recipe goes to the bot as the engine's own YAML and reads back equal.
    sha = "0123456789abcdef0123456789abcdef01234567"
    pinned = ct.model_copy(update={"revision": sha})
    recipe = screen_recipe(method="ties_sv", cts=[pinned], sft=_sft(), density=0.3, slack=0.2, sft_weight=0.5)
    assert recipe.models[0].model == f"a/ct@{sha}"
    assert parse_recipe(yaml.safe_load(recipe.to_yaml())) == recipe
    # What "Hand to the bot" sends is what the bot's POST /jobs accepts: the bot's own reading of the
    # body (`bot.recipes.custom_recipe`, the engine's Recipe) keeps method, density, slack and weights
    # and puts the job's pinned CT, SFT and base in place of the references.
    from bot.models import RecipeRequest
    from bot.recipes import custom_recipe

    ct_ref, sft_ref, base_ref = f"o/ct@{'1' * 40}", f"o/sft@{'2' * 40}", f"o/base@{'3' * 40}"
    placed = custom_recipe(
        RecipeRequest.model_validate({"text": recipe.to_yaml()}), ct=ct_ref, language="ben_Beng", sft=sft_ref,
        base=base_ref, output_repo="bot/out",
    )  # fmt: skip
    assert [m.model for m in placed.models] == [ct_ref, sft_ref] and placed.base_model == base_ref
    assert placed.merge_method == "ties_sv" and placed.densities() == (0.3, 0.3) and placed.weights() == (1.0, 0.5)
    assert placed.parameters.slack == 0.2  # type: ignore[attr-defined]
    assert {m.name for m in methods if m.uses_slack} == {
        "ties_sv",
        "dare_ties",
        "breadcrumbs_ties",
        "della",
    }  # every method with a slack step


def test_per_layer_diagnostics(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from registry.catalog.entries import CtEntry, ModelRef, ct_entry_id
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge

    ct = CtEntry(
        id=ct_entry_id(repo="a/ct", revision="main", language="ben_Beng"), repo="a/ct", revision="main",
        base=ModelRef(repo="a/base"), language="ben_Beng", verified=False,
    )  # fmt: skip
    on_screen = screen_recipe(method="ties_sv", cts=[ct], sft=_sft(), density=0.5, slack=0.3)
    recipe = local_recipe(on_screen, {"a/ct": tiny_family.ct, "a/sft": tiny_family.sft, "a/base": tiny_family.base})
    assert recipe.models[0].model == str(tiny_family.ct) and recipe.base_model == str(tiny_family.base)
    report = run_merge(plan_merge(recipe), out=tmp_path / "m", device="cpu", progress=False).report
    rows = per_layer(report)
    assert {r["layer"] for r in rows} == {"layer 00", "layer 01", "embeddings / head / norm"}
    conflicts = sum(r["count"] for r in rows if r["stat"] == "sign conflicts")
    rescued = sum(r["count"] for r in rows if r["stat"] == "rescued by slack")
    totals = report.totals()
    assert conflicts == totals.sign_conflicts and rescued == sum(totals.rescued.values()) > 0
    assert {r["stat"] for r in rows} >= {"kept ct", "kept sft", "SFT discarded"}
    assert layer_of("model.layers.12.mlp.up_proj.weight") == "layer 12" and layer_of("lm_head.weight").startswith("emb")


def test_group_merge_recipe(tiny_family: DemoFamily, tmp_path: Path) -> None:
    from registry.catalog.entries import CtEntry, ModelRef, ct_entry_id
    from registry.lab.tiny import derive_finetune
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge

    def ct(repo: str, language: str) -> CtEntry:
        return CtEntry(
            id=ct_entry_id(repo=repo, revision="main", language=language), repo=repo, revision="main",
            base=ModelRef(repo="a/base"), language=language, verified=False,
        )  # fmt: skip

    uig = derive_finetune(tiny_family.base, tmp_path / "ct-uig", seed=7)
    on_screen = screen_recipe(
        method="ties_sv", cts=[ct("a/ct-khk", "khk_Cyrl"), ct("a/ct-uig", "uig_Arab")], sft=_sft(), density=0.5,
        slack=0.1,
    )  # fmt: skip
    recipe = local_recipe(
        on_screen, {"a/ct-khk": tiny_family.ct, "a/ct-uig": uig, "a/sft": tiny_family.sft, "a/base": tiny_family.base}
    )
    assert recipe.languages() == ("khk_Cyrl", "uig_Arab") and recipe.tokenizer_source == "base"
    report = run_merge(plan_merge(recipe), out=tmp_path / "group", device="cpu", progress=False).report
    assert report.roles == ["ct", "ct", "sft"] and len(report.inputs) == 3


def test_examples_from_a_data_folder(tmp_path: Path) -> None:
    (tmp_path / "sib200" / "ben_Beng").mkdir(parents=True)
    lines = [json.dumps({"index_id": i, "text": f"বাক্য {i}"}) for i in range(5)]
    (tmp_path / "sib200" / "ben_Beng" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = load_examples("ben_Beng", data_dir=tmp_path, per_source=2)
    assert examples == [SIB_PROMPT.format(text="বাক্য 0"), SIB_PROMPT.format(text="বাক্য 1")]
    assert load_examples("tam_Taml", data_dir=tmp_path) == []


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1/")
    monkeypatch.setenv("MERGELING_REGISTRY", "lab/reg")
    monkeypatch.setenv("MERGELING_BOT_URL", "http://bot")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    config = SpaceConfig.from_env(bot_url=None, device="cpu")
    assert (config.endpoint, config.registry, config.bot_url, config.token, config.device) == (
        "http://127.0.0.1:1", "lab/reg", "http://bot", None, "cpu",
    )  # fmt: skip


def test_plot_frames_keep_types_and_colour_categories() -> None:
    import math

    from space.frames import LAYER_COLUMNS, LAYER_STATS, frame, link_rows, seeded

    empty = frame([], LAYER_COLUMNS)
    assert list(empty.columns) == LAYER_COLUMNS and str(empty["stat"].dtype) == "object"
    assert str(empty["share"].dtype) == "float64"
    seed = seeded(LAYER_COLUMNS, "stat", list(LAYER_STATS))
    assert list(seed["stat"]) == list(LAYER_STATS) and all(math.isnan(v) for v in seed["share"])
    table = link_rows([{"model": "a/b", "role": "ct", "link": "http://hub/a/b"}])
    assert table.to_dict("records") == [{"model": "[a/b](http://hub/a/b)", "role": "ct"}]
