"""`registry add/list/show/pairs/sync/remove` through the CLI, on a real embedded hub with tiny models."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from registry.catalog.entries import MergeEntry, MergeInput, merge_entry_id
from registry.catalog.store import CatalogStore, record_merge
from registry.cli import app
from tests._fixtures.hub import HubHandle


@dataclass(frozen=True)
class Lab:
    """Tiny checkpoints uploaded to the hub, and their head commits."""

    hub: HubHandle
    sha: dict[str, str]
    tmp: Path


def _card(**meta: object) -> bytes:
    import yaml

    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n# tiny test model\n".encode()


@pytest.fixture(scope="module")
def lab(hub: HubHandle, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    from registry.lab.tiny import build_tiny_llama, derive_finetune

    root = tmp_path_factory.mktemp("catalog_lab")
    base = build_tiny_llama(root / "base", seed=0)
    ct = derive_finetune(base, root / "ct", seed=1, extra_vocab=16)
    sft = derive_finetune(base, root / "sft", seed=2)
    other = build_tiny_llama(root / "other", seed=3, hidden_size=32, intermediate_size=64)
    other_sft = derive_finetune(other, root / "other-sft", seed=4)
    client = hub.client()
    uploads = {"lab/tiny-base": base, "lab/tiny-ct": ct, "lab/tiny-sft": sft, "lab/other-base": other,
               "lab/other-sft": other_sft}  # fmt: skip
    cards = {
        "lab/tiny-ct": _card(tags=["mergeling-ct"], language=["bn", "en"], base_model="lab/tiny-base", ct_tokens=12345),
        "lab/tiny-sft": _card(tags=["mergeling-sft"], base_model="lab/tiny-base", datasets=["flan"]),
        "lab/other-sft": _card(tags=["mergeling-sft"], base_model="lab/other-base"),
        "lab/card-only": _card(tags=["mergeling-ct"], language="ta", base_model="lab/tiny-base"),
    }
    for repo, folder in uploads.items():
        client.create_repo(repo)
        client.upload_folder(folder, repo)
    client.create_repo("lab/card-only")
    client.create_repo("lab/list-config")
    client.commit_files("lab/list-config", message="A config that is not an object", add={"config.json": b"[1, 2]"})
    for repo, card in cards.items():
        client.commit_files(repo, message="Card", add={"README.md": card})
    # Stand-ins for the paper's checkpoints under their real names (the seed file's repos).
    for user in ("pkupie", "meta-llama"):
        stand_in = hub.client(hub.make_token(user))
        names = ["Llama-2-7b-hf"] if user == "meta-llama" else [
            f"Llama-2-7b-{code}" for code in ("ben", "tam", "tel", "ori", "bod", "uig", "mon", "FLAN-step884")
        ]  # fmt: skip
        for name in names:
            folder = base if user == "meta-llama" else (sft if "FLAN" in name else ct)
            stand_in.create_repo(f"{user}/{name}")
            stand_in.upload_folder(folder, f"{user}/{name}")
    sha = {repo: client.head_sha(repo) for repo in [*uploads, "lab/card-only"]}
    return Lab(hub=hub, sha=sha, tmp=root)


def run(lab: Lab, *args: str, registry: str | None = "alice/cli-registry", token: str | None = None) -> Result:
    extra = ["--endpoint", lab.hub.url, "--token", token or lab.hub.token]
    if registry:
        extra += ["--registry", registry]
    env = {"HF_HUB_CACHE": str(lab.tmp / "cli-cache"), "HF_TOKEN": None, "HF_ENDPOINT": None,
           "MERGELING_REGISTRY": None, "MERGELING_EXTRA_LANGUAGES": None}  # fmt: skip
    if args[0] == "add" and (len(args) == 1 or args[1].startswith("--")):
        return CliRunner().invoke(app, ["-q", "add", *extra, *args[1:]], env=env)
    return CliRunner().invoke(app, ["-q", *args, *extra], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def test_add_list_show_pairs_remove(lab: Lab) -> None:
    ct_id = ok(
        run(lab, "add", "ct", "lab/tiny-ct", "--language", "ben_Beng", "--base", "lab/tiny-base", "--tokens", "12345")
    ).strip()
    assert ct_id == f"ct-ben_Beng-lab--tiny-ct-{lab.sha['lab/tiny-ct'][:7]}"
    sft_id = ok(run(lab, "add", "sft", "lab/tiny-sft", "--base", "lab/tiny-base", "--data", "flan")).strip()
    assert sft_id == f"sft-lab--tiny-sft-{lab.sha['lab/tiny-sft'][:7]}"

    entries = json.loads(ok(run(lab, "list", "--json")))
    assert [e["id"] for e in entries] == sorted([ct_id, sft_id])
    ct = next(e for e in entries if e["id"] == ct_id)
    assert ct["revision"] == lab.sha["lab/tiny-ct"] and ct["tokens"] == 12345
    assert ct["base"] == {"repo": "lab/tiny-base", "revision": lab.sha["lab/tiny-base"]}
    assert ct["shape"]["hidden_size"] == 64 and ct["shape"]["vocab_size"] == 336
    assert ct["shape"]["num_key_value_heads"] == 2 and ct["shape"]["architecture"] == "LlamaForCausalLM"
    assert ct["tokenizer"] == {"vocab_size": 336, "base_vocab_size": 320, "extended": True}
    assert [e["id"] for e in json.loads(ok(run(lab, "list", "--kind", "sft", "--json")))] == [sft_id]
    assert json.loads(ok(run(lab, "list", "--language", "tam_Taml", "--json"))) == []

    table = ok(run(lab, "list"))
    assert ct_id in table and sft_id in table and "336 (+16)" in table and "verified" in table
    assert json.loads(ok(run(lab, "show", ct_id))) == ct

    pairs = json.loads(ok(run(lab, "pairs", "--json")))
    assert [(p["ct_id"], p["sft_id"], p["status"]) for p in pairs] == [(ct_id, sft_id, "compatible")]
    assert "extended by 16 tokens" in pairs[0]["notes"][0]

    other_id = ok(run(lab, "add", "sft", "lab/other-sft", "--base", "lab/other-base")).strip()
    pairs = {p["sft_id"]: p for p in json.loads(ok(run(lab, "pairs", "--json", "--language", "ben_Beng")))}
    assert pairs[other_id]["status"] == "incompatible"
    assert pairs[other_id]["reasons"][0] == "different base: CT is on lab/tiny-base, SFT on lab/other-base"
    assert "shapes (CT vs SFT): hidden_size 64 vs 32" in pairs[other_id]["reasons"][1]
    assert "incompatible" in ok(run(lab, "pairs"))

    duplicate = run(lab, "add", "sft", "lab/tiny-sft", "--base", "lab/tiny-base")
    assert duplicate.exit_code == 1 and "already in registry" in duplicate.stderr

    recipe_hash = "d" * 64
    record_merge(
        CatalogStore(hub=lab.hub.client(), repo_id="alice/cli-registry"),
        MergeEntry(
            id=merge_entry_id(output_repo="alice/ben-merged", recipe_hash=recipe_hash), method="ties_sv",
            recipe_hash=recipe_hash, output_repo="alice/ben-merged", languages=("ben_Beng",),
            inputs=(MergeInput(role="ct", repo="lab/tiny-ct", revision=lab.sha["lab/tiny-ct"], entry_id=ct_id),
                    MergeInput(role="sft", repo="lab/tiny-sft", revision=lab.sha["lab/tiny-sft"], entry_id=sft_id)),
        ),
    )  # fmt: skip
    merges = ok(run(lab, "list", "--kind", "merge", "--language", "ben_Beng"))
    assert "merge-alice--ben-merged-ddddddd" in merges and "ties_sv" in merges and "pending" in merges
    ok(run(lab, "remove", "merge-alice--ben-merged-ddddddd"))

    assert ok(run(lab, "remove", other_id)).strip() == other_id
    assert [e["id"] for e in json.loads(ok(run(lab, "list", "--json")))] == sorted([ct_id, sft_id])
    gone = run(lab, "show", other_id)
    assert gone.exit_code == 1 and f"no entry {other_id!r}" in gone.stderr


def test_add_pins_a_revision(lab: Lab) -> None:
    sha = lab.sha["lab/tiny-sft"]
    entry_id = ok(
        run(lab, "add", "sft", f"lab/tiny-sft@{sha}", "--base", "lab/tiny-base", registry="alice/cli-pinned")
    ).strip()
    assert json.loads(ok(run(lab, "show", entry_id, registry="alice/cli-pinned")))["revision"] == sha


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ct", "lab/nope", "--language", "ben_Beng", "--base", "lab/tiny-base"], "model repo lab/nope not found"),
        (["ct", "lab/tiny-ct@no-such-branch", "--language", "ben_Beng", "--base", "lab/tiny-base"],
         "revision 'no-such-branch' does not exist in lab/tiny-ct"),
        (["ct", "lab/tiny-ct", "--language", "ben_Beng", "--base", "lab/nope-base"], "model repo lab/nope-base not found"),
        (["ct", "lab/tiny-ct", "--language", "ben_Beng", "--base", "lab/other-base"],
         "base mismatch: the model card of lab/tiny-ct declares base_model lab/tiny-base, not lab/other-base"),
        (["sft", "lab/tiny-base", "--base", "lab/other-base"],
         "base mismatch: SFT lab/tiny-base cannot derive from lab/other-base (hidden_size 64 vs 32; intermediate_size 128 vs 64)"),
        (["ct", "lab/card-only", "--language", "tam_Taml", "--base", "lab/tiny-base"], "no config.json at commit"),
        (["sft", "lab/list-config", "--base", "lab/tiny-base"], "is a JSON list, not an object"),
    ],
)  # fmt: skip
def test_add_refuses_what_it_cannot_verify(lab: Lab, args: list[str], message: str) -> None:
    result = run(lab, "add", *args, registry="alice/cli-refusals")
    assert result.exit_code == 1, result.stdout
    assert result.stdout == ""
    assert message in " ".join(result.stderr.split()), result.stderr
    missing = run(lab, "list", registry="alice/cli-refusals")
    assert missing.exit_code == 1 and "does not exist on this Hub" in missing.stderr  # nothing was written


def test_usage_errors_exit_2(lab: Lab) -> None:
    bad_language = run(lab, "add", "ct", "lab/tiny-ct", "--language", "bn", "--base", "lab/tiny-base")
    assert bad_language.exit_code == 2 and "FLORES-200 code" in bad_language.stderr
    bad_repo = run(lab, "add", "sft", "not-a-repo", "--base", "lab/tiny-base")
    assert bad_repo.exit_code == 2 and "owner/name" in bad_repo.stderr
    assert run(lab, "list", "--kind", "weights").exit_code == 2
    bad_registry = run(lab, "list", registry="no-namespace")
    assert bad_registry.exit_code == 2 and "owner/name" in bad_registry.stderr
    assert run(lab, "add").exit_code == 2  # neither a subcommand nor --from


def test_default_registry_is_in_the_token_owners_namespace(lab: Lab) -> None:
    entry_id = ok(run(lab, "add", "sft", "lab/tiny-sft", "--base", "lab/tiny-base", registry=None)).strip()
    assert lab.hub.client().file_exists("alice/mergeling-registry", f"entries/sft/{entry_id}.json", repo_type="dataset")
    no_token = CliRunner().invoke(
        app, ["list", "--endpoint", lab.hub.url], env={"HF_TOKEN": None, "MERGELING_REGISTRY": None}
    )
    assert no_token.exit_code == 1 and "pass --registry OWNER/NAME" in " ".join(no_token.stderr.split())
    bad_token = run(lab, "list", registry=None, token="hf_not_a_token")
    assert bad_token.exit_code == 1 and "the token's namespace is unknown" in " ".join(bad_token.stderr.split())


def test_sync_discovers_checkpoints_from_card_metadata(lab: Lab) -> None:
    result = run(lab, "sync", registry="alice/cli-sync")
    added = set(ok(result).split())
    assert added == {
        f"ct-ben_Beng-lab--tiny-ct-{lab.sha['lab/tiny-ct'][:7]}",
        f"sft-lab--tiny-sft-{lab.sha['lab/tiny-sft'][:7]}",
        f"sft-lab--other-sft-{lab.sha['lab/other-sft'][:7]}",
    }
    stderr = " ".join(result.stderr.split())
    assert "Skipped lab/card-only: cannot verify lab/card-only: no config.json" in stderr
    entries = {e["repo"]: e for e in json.loads(ok(run(lab, "list", "--json", registry="alice/cli-sync")))}
    assert entries["lab/tiny-ct"]["tokens"] == 12345 and entries["lab/tiny-ct"]["source"] == "sync"
    assert entries["lab/tiny-sft"]["data"] == "flan"
    again = run(lab, "sync", registry="alice/cli-sync")
    assert ok(again) == "" and "0 added, 3 already present, 1 skipped" in " ".join(again.stderr.split())


def test_add_from_seed_verifies_on_the_hub(lab: Lab, repo_root: Path) -> None:
    seed = str(repo_root / "recipes" / "registry-seed.yaml")
    added = ok(run(lab, "add", "--from", seed, registry="alice/cli-seed")).split()
    assert len(added) == 8 and all(not i.endswith("-main") for i in added)
    assert "ct-mon_Mong-pkupie--Llama-2-7b-mon-" in " ".join(added)
    pairs = json.loads(ok(run(lab, "pairs", "--json", registry="alice/cli-seed")))
    assert len(pairs) == 7 and {p["status"] for p in pairs} == {"compatible"}
    langs = {"ben_Beng", "tam_Taml", "tel_Telu", "ory_Orya", "bod_Tibt", "uig_Arab", "mon_Mong"}
    assert {p["language"] for p in pairs} == langs
    again = run(lab, "add", "--from", seed, registry="alice/cli-seed")
    assert ok(again) == "" and "0 entries" in again.stderr and "8 already present" in again.stderr


def test_add_from_seed_refuses_unverifiable_unless_no_verify(lab: Lab, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    shutil.copy(Path(__file__).resolve().parents[2] / "recipes" / "registry-seed.yaml", seed)
    seed.write_text(seed.read_text() + "  - {kind: ct, repo: pkupie/Llama-2-7b-ory, language: ory_Orya}\n")
    refused = run(lab, "add", "--from", str(seed), registry="alice/cli-unverified")
    assert refused.exit_code == 1
    message = " ".join(refused.stderr.split())
    assert "1 of 9 seed checkpoints could not be verified, nothing added" in message
    assert "pkupie/Llama-2-7b-ory: repo not found" in message and "--no-verify" in message
    assert run(lab, "list", registry="alice/cli-unverified").exit_code == 1  # registry never created

    added = ok(run(lab, "add", "--from", str(seed), "--no-verify", registry="alice/cli-unverified")).split()
    assert len(added) == 9 and all(i.endswith("-main") for i in added)
    entries = json.loads(ok(run(lab, "list", "--json", registry="alice/cli-unverified")))
    assert {(e["verified"], e["source"], e["shape"]) for e in entries} == {(False, "seed", None)}
    pairs = json.loads(ok(run(lab, "pairs", "--json", registry="alice/cli-unverified")))
    assert len(pairs) == 8 and {p["status"] for p in pairs} == {"unverified"}
    assert "unverified" in ok(run(lab, "list", registry="alice/cli-unverified"))


def test_add_ct_refuses_a_language_the_card_contradicts(lab: Lab) -> None:
    # lab/tiny-ct's card says language [bn, en]: Tamil used to be accepted.
    args = ["add", "ct", "lab/tiny-ct", "--language", "tam_Taml", "--base", "lab/tiny-base"]
    refused = run(lab, *args, registry="alice/language-registry")
    assert refused.exit_code == 1
    assert "declares language ben_Beng, not tam_Taml" in refused.stderr and "--force" in refused.stderr
    forced = ok(run(lab, *args, "--force", registry="alice/language-registry")).strip()
    assert forced.startswith("ct-tam_Taml-lab--tiny-ct-")


def test_add_refuses_a_checkpoint_tagged_for_the_other_role(lab: Lab) -> None:
    # `add sft` on a mergeling-ct repo used to be accepted, and `pairs` then paired that CT with itself.
    as_sft = run(lab, "add", "sft", "lab/tiny-ct", "--base", "lab/tiny-base", registry="alice/role-registry")
    assert as_sft.exit_code == 1 and "tagged mergeling-ct" in as_sft.stderr and "registry add ct" in as_sft.stderr
    as_ct = run(lab, "add", "ct", "lab/tiny-sft", "--language", "ben_Beng", "--base", "lab/tiny-base",
                registry="alice/role-registry")  # fmt: skip
    assert as_ct.exit_code == 1 and "tagged mergeling-sft" in as_ct.stderr
    forced = run(lab, "add", "sft", "lab/tiny-ct", "--base", "lab/tiny-base", "--force", registry="alice/role-registry")
    assert forced.exit_code == 0, forced.stderr


def test_add_ct_checks_the_flores_list(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Codes of the right shape but outside FLORES-200 used to be accepted.
    args = ["add", "ct", "lab/card-only", "--language", "xxx_Yyyy", "--base", "lab/tiny-base"]
    refused = run(lab, *args)
    assert refused.exit_code == 2 and "not in the FLORES-200 list" in refused.stderr
    assert "MERGELING_EXTRA_LANGUAGES=xxx_Yyyy" in refused.stderr


def test_add_ct_sft_pairs_know_their_baseline(lab: Lab, tmp_path: Path) -> None:
    """`registry add ct-sft`: verified against its CT, listed, shown as the pair's CT-then-SFT baseline."""
    from registry.lab.tiny import derive_finetune

    client = lab.hub.client()
    ct_sft = derive_finetune(lab.tmp / "ct", tmp_path / "ct-sft", seed=7)  # the CT, further fine-tuned
    wrong = derive_finetune(lab.tmp / "sft", tmp_path / "wrong", seed=8)  # base vocabulary: not from the CT
    for repo, folder in (("lab/tiny-ct-sft", ct_sft), ("lab/tiny-wrong-ct-sft", wrong)):
        if not client.repo_exists(repo):
            client.create_repo(repo)
            client.upload_folder(folder, repo)
    registry = "alice/cli-ct-sft"
    ok(run(lab, "add", "sft", "lab/tiny-sft", "--base", "lab/tiny-base", "--data", "flan", registry=registry))
    missing = run(lab, "add", "ct-sft", "lab/tiny-ct-sft", "--ct", "lab/tiny-ct", registry=registry)
    assert missing.exit_code == 1
    assert "CT lab/tiny-ct is not in alice/cli-ct-sft; record it first with `registry add ct" in " ".join(
        missing.stderr.split()
    )
    ct_id = ok(
        run(lab, "add", "ct", "lab/tiny-ct", "--language", "ben_Beng", "--base", "lab/tiny-base", "--tokens", "12345",
            registry=registry)
    ).strip()  # fmt: skip
    refused = run(lab, "add", "ct-sft", "lab/tiny-wrong-ct-sft", "--ct", "lab/tiny-ct", registry=registry)
    assert refused.exit_code == 1 and "vocab" in refused.stderr.lower()
    baseline = ok(
        run(lab, "add", "ct-sft", "lab/tiny-ct-sft", "--ct", "lab/tiny-ct", "--data", "flan", registry=registry)
    ).strip()
    assert baseline.startswith("ct_sft-ben_Beng-lab--tiny-ct-sft-")
    shown = json.loads(ok(run(lab, "show", baseline, registry=registry)))
    assert shown["kind"] == "ct_sft" and shown["language"] == "ben_Beng" and shown["ct_tokens"] == 12345
    assert shown["ct"] == {"repo": "lab/tiny-ct", "revision": lab.sha["lab/tiny-ct"]}
    assert shown["base"]["repo"] == "lab/tiny-base" and shown["data"] == "flan"
    listed = json.loads(ok(run(lab, "list", "--json", "--kind", "ct_sft", registry=registry)))
    assert [e["id"] for e in listed] == [baseline]
    assert baseline in ok(run(lab, "list", "--language", "ben_Beng", registry=registry))
    (pair,) = json.loads(ok(run(lab, "pairs", "--json", registry=registry)))
    assert pair["ct_id"] == ct_id and pair["ct_sft_ids"] == [baseline] and pair["status"] == "compatible"
