"""LoRA adapter CTs in the catalog and the bot, on a real embedded hub with a real tiny PEFT adapter.

`registry add ct` records an adapter repo (adapter_config.json + adapter_model.safetensors, no
config.json) on the adapter's own base, `registry pairs` pairs it only with SFTs of that base, and
the bot merges it with the adapter repo as the recipe's CT model: the published weights equal a
merge of peft's merge_and_unload() model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from bot.config import BotConfig
from bot.queue import trigger_key
from bot.worker import Worker
from registry.catalog.store import CatalogStore
from registry.catalog.verify import build_sft_entry
from registry.cli import app
from registry.lab.tiny import DemoFamily, build_tiny_llama, derive_finetune
from registry.merge.engine import run_merge
from registry.merge.plan import plan_merge
from registry.recipe import parse_recipe
from tests._fixtures.botkit import ct_meta, eval_fixture, push_checkpoint, sft_meta
from tests._fixtures.hub import HubHandle

peft = pytest.importorskip("peft")
BASE, SFT, OTHER_BASE, OTHER_SFT = "lab/ad-base", "lab/ad-sft", "lab/ad-other-base", "lab/ad-other-sft"


@dataclass(frozen=True)
class World:
    hub: HubHandle
    sha: dict[str, str]
    merged: Path  # peft's merge_and_unload() of the adapter
    tmp: Path


def _adapter(base: Path, root: Path) -> tuple[Path, Path]:
    """A random LoRA adapter of `base` recorded as an adapter of the Hub repo BASE, and its merged model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.add_(0.05 * torch.randn_like(param))  # lora_B starts at zero: make the update real
    adapter, merged = root / "adapter", root / "merged"
    wrapped.save_pretrained(str(adapter))
    wrapped.merge_and_unload().save_pretrained(str(merged))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, merged / name)
    _edit(adapter, base_model_name_or_path=BASE)  # trained from the local copy of BASE
    (adapter / "README.md").unlink(missing_ok=True)
    return adapter, merged


def _edit(adapter: Path, **changes: object) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes, indent=2))


def _variant(adapter: Path, root: Path, name: str, *, drop: str | None = None, **changes: object) -> Path:
    folder = root / name
    shutil.copytree(adapter, folder)
    _edit(folder, **changes)
    if drop:
        (folder / drop).unlink()
    return folder


@pytest.fixture(scope="module")
def world(hub: HubHandle, tiny_family: DemoFamily, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("catalog_adapter")
    adapter, merged = _adapter(tiny_family.base, root)
    other = build_tiny_llama(root / "other", seed=3, hidden_size=32, intermediate_size=64)
    client = hub.client()
    meta = ct_meta("ben_Beng", BASE)
    uploads = {
        BASE: (tiny_family.base, {"license": "mit"}),
        SFT: (tiny_family.sft, sft_meta(BASE)),
        OTHER_BASE: (other, {"license": "mit"}),
        OTHER_SFT: (derive_finetune(other, root / "other-sft", seed=4), sft_meta(OTHER_BASE)),
        "lab/ad-ct": (adapter, meta),
        "lab/ad-full-ct": (tiny_family.ct, meta),
        "lab/ad-local": (_variant(adapter, root, "local", base_model_name_or_path=str(tiny_family.base)), meta),
        "lab/ad-ia3": (_variant(adapter, root, "ia3", peft_type="IA3"), meta),
        "lab/ad-dora": (_variant(adapter, root, "dora", use_dora=True), meta),
        "lab/ad-bin": (_variant(adapter, root, "bin", drop="adapter_model.safetensors"), meta),
        "lab/ad-card-other": (adapter, ct_meta("ben_Beng", OTHER_BASE)),
        "lab/ad-sft-adapter": (adapter, sft_meta(BASE)),
    }
    sha = {repo: push_checkpoint(client, folder, repo, card) for repo, (folder, card) in uploads.items()}
    return World(hub=hub, sha=sha, merged=merged, tmp=root)


def run(world: World, *args: str, registry: str) -> Result:
    extra = ["--endpoint", world.hub.url, "--token", world.hub.token, "--registry", registry]
    env = {"HF_HUB_CACHE": str(world.tmp / "cli-cache"), "HF_TOKEN": None, "HF_ENDPOINT": None,
           "MERGELING_REGISTRY": None, "MERGELING_EXTRA_LANGUAGES": None}  # fmt: skip
    return CliRunner().invoke(app, ["-q", *args, *extra], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def test_add_ct_records_an_adapter_on_its_own_base_and_pairs_it_with_that_bases_sfts(world: World) -> None:
    reg = "alice/adapter-registry"
    ct_id = ok(run(world, "add", "ct", "lab/ad-ct", "--language", "ben_Beng", registry=reg)).strip()
    assert ct_id == f"ct-ben_Beng-lab--ad-ct-{world.sha['lab/ad-ct'][:7]}"
    entry = json.loads(ok(run(world, "show", ct_id, registry=reg)))
    assert entry["base"] == {"repo": BASE, "revision": world.sha[BASE]}
    assert entry["revision"] == world.sha["lab/ad-ct"]
    assert entry["adapter"] == {
        "peft_type": "LORA", "base_model_name_or_path": BASE, "r": 4, "lora_alpha": 8.0, "use_rslora": False,
        "target_modules": ["down_proj", "q_proj", "v_proj"], "modules_to_save": [],
    }  # fmt: skip
    base_config = json.loads((world.merged / "config.json").read_text())
    assert entry["shape"]["hidden_size"] == base_config["hidden_size"] == 64  # the base's shapes
    assert entry["shape"]["vocab_size"] == base_config["vocab_size"]
    assert entry["tokenizer"]["extended"] is False
    assert "LoRA r4" in ok(run(world, "list", registry=reg))

    sft_id = ok(run(world, "add", "sft", SFT, "--base", BASE, registry=reg)).strip()
    other_id = ok(run(world, "add", "sft", OTHER_SFT, "--base", OTHER_BASE, registry=reg)).strip()
    pairs = {p["sft_id"]: p for p in json.loads(ok(run(world, "pairs", "--json", registry=reg)))}
    assert pairs[sft_id]["status"] == "compatible"
    assert any(f"LoRA adapter (r 4) of {BASE}" in note for note in pairs[sft_id]["notes"])
    assert pairs[other_id]["status"] == "incompatible"
    assert pairs[other_id]["reasons"][0] == f"different base: CT is on {BASE}, SFT on {OTHER_BASE}"


def test_a_given_base_must_be_the_adapters_and_may_pin_its_revision(world: World) -> None:
    reg = "alice/adapter-registry-pinned"
    base_sha = world.sha[BASE]
    args = ("add", "ct", "lab/ad-ct", "--language", "ben_Beng", "--base", f"{BASE}@{base_sha}")
    ct_id = ok(run(world, *args, registry=reg)).strip()
    assert json.loads(ok(run(world, "show", ct_id, registry=reg)))["base"] == {"repo": BASE, "revision": base_sha}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ct", "lab/ad-ct", "--base", OTHER_BASE],
         f"base mismatch: lab/ad-ct is a LoRA adapter of {BASE} (adapter_config.json base_model_name_or_path), "
         f"not of {OTHER_BASE}; pass --base {BASE} or leave --base out"),
        (["ct", "lab/ad-local"], "names base_model_name_or_path '/"),
        (["ct", "lab/ad-ia3"], "adapter type IA3 is not supported (only LoRA adapters merge)"),
        (["ct", "lab/ad-dora"], "DoRA (use_dora: true) is not supported"),
        (["ct", "lab/ad-bin"], "a LoRA adapter without adapter_model.safetensors"),
        (["ct", "lab/ad-card-other"],
         f"the model card of lab/ad-card-other declares base_model {OTHER_BASE}, not {BASE}"),
        (["ct", "lab/ad-full-ct"], "name the base model it continued from (--base OWNER/NAME)"),
        (["ct", "lab/ad-ct", "--base", "lab/ad-ct"], "base mismatch: lab/ad-ct is a LoRA adapter of lab/ad-base"),
        (["sft", "lab/ad-sft-adapter", "--base", BASE], "only CT checkpoints may be adapters"),
    ],
)  # fmt: skip
def test_adapters_the_catalog_cannot_merge_are_refused(world: World, args: list[str], message: str) -> None:
    if args[0] == "ct":
        args = [*args, "--language", "ben_Beng"]
    result = run(world, "add", *args, registry="alice/adapter-refusals")
    assert result.exit_code == 1, result.stdout
    assert message in " ".join(result.stderr.split()), result.stderr
    assert run(world, "list", registry="alice/adapter-refusals").exit_code == 1  # nothing was written


def test_the_bot_merges_an_adapter_ct_onto_its_base(world: World, tiny_family: DemoFamily) -> None:
    hub = world.hub
    bob = hub.client(hub.bob_token, cache="bob-adapter")
    CatalogStore(hub=bob, repo_id="bob/adapter-registry").add(build_sft_entry(bob, repo=SFT, revision=None, base=BASE))
    suites, data = eval_fixture(world.tmp / "eval")
    recipes = world.tmp / "recipes"
    recipes.mkdir()
    config = BotConfig(data=world.tmp / "bot", registry="bob/adapter-registry", namespace="bob", watch=("alice",),
                       endpoint=hub.url, token=hub.bob_token, recipes_dir=recipes, suites_dir=suites, data_dir=data,
                       eval_limit=2, max_attempts=1, backoff_s=0)  # fmt: skip
    sha = world.sha["lab/ad-ct"]
    queue = config.open_queue()
    trigger, _ = queue.enqueue(key=trigger_key("lab/ad-ct", sha), kind="pair", ct_repo="lab/ad-ct", ct_sha=sha)
    Worker(config, queue, hub=bob).run_until_idle()
    job = queue.get(trigger.id)
    assert job is not None and job.state == "published", job.error if job else None

    readme = bob.read_file(job.output_repo, "README.md").decode()
    assert "Evaluation unavailable" not in readme and "| metric | CT" in readme  # the CT evaluated as base + adapter
    assert set(job.data.eval_records) == {"ct", "sft", "merge"}

    recipe = job.spec.recipe
    assert [m["model"] for m in recipe["models"]] == [f"lab/ad-ct@{sha}", f"{SFT}@{world.sha[SFT]}"]
    assert recipe["base_model"] == f"{BASE}@{world.sha[BASE]}"

    published = load_file(bob.download_file(job.output_repo, "model.safetensors"))
    local = dict(recipe, base_model=str(tiny_family.base))
    local["models"] = [
        dict(recipe["models"][0], model=str(world.merged)),
        dict(recipe["models"][1], model=str(tiny_family.sft)),
    ]
    local.pop("mergeling")
    run_merge(plan_merge(parse_recipe(local)), out=world.tmp / "local-merge", device="cpu", progress=False)
    want = load_file(world.tmp / "local-merge" / "model.safetensors")
    assert published.keys() == want.keys()
    for name, tensor in want.items():
        torch.testing.assert_close(published[name], tensor, rtol=0, atol=1e-5, msg=name)
