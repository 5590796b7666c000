"""Pure pieces of the bot's safety rules (issue 16): names, error scrubbing, vocabularies, header bounds,
the provenance line, what a publish uploads, and no `trust_remote_code=True` anywhere."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from bot.errors import TokenizerMismatchError, public_text
from bot.recipes import output_name
from bot.vocab import check_same_tokenizer, id_to_token
from registry.errors import CheckpointError, RecipeError
from registry.io.safetensors import header_bound, read_header
from registry.publish import provenance_line, publishable_files, read_provenance

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_default_name_keeps_two_owners_apart_and_is_a_valid_hub_name() -> None:
    from huggingface_hub.utils import validate_repo_id

    from bot.config import DEFAULT_TEMPLATE

    names = {
        output_name(DEFAULT_TEMPLATE, ct="tiny-ct", sft="sft", method="ties_sv", language="ben_Beng", ct_owner=owner)
        for owner in ("alice", "bob")
    }
    assert names == {"alice__tiny-ct-sft-ties-sv", "bob__tiny-ct-sft-ties-sv"}
    for name in names:
        validate_repo_id(f"mergebot/{name}")
    odd = output_name("{ct}--{sft}..x", ct="a", sft="b", method="m", language="l")
    assert odd == "a-b.x"


def test_a_template_with_an_unknown_field_says_which_fields_exist() -> None:
    with pytest.raises(RecipeError, match=r"use the fields \{ct_owner\}, \{ct\}, \{sft\}, \{method\}, \{language\}"):
        output_name("{owner}-{ct}", ct="a", sft="b", method="m", language="l")


def test_error_texts_lose_server_paths_but_keep_repos_and_urls(tmp_path: Path) -> None:
    data = tmp_path / "demo" / "bot"
    text = (
        f"{data}/hf-cache/models--alice--x/snapshots/abc/model.safetensors: not a valid safetensors file; "
        "see http://127.0.0.1:8000/alice/tiny-ct and /srv/other/place.txt for alice/tiny-ct"
    )
    out = public_text(text, roots=(data,))
    assert str(tmp_path) not in out and "/srv/other" not in out and "hf-cache" not in out
    assert out.startswith("<bot data>") and "not a valid safetensors file" in out
    assert "http://127.0.0.1:8000/alice/tiny-ct" in out and "for alice/tiny-ct" in out


def _tokenizer(folder: Path, tokens: list[str], added: dict[int, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}},
        "added_tokens": [{"id": i, "content": c} for i, c in (added or {}).items()],
    }
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


def test_tokenizers_that_differ_on_a_shared_id_are_refused_naming_it(tmp_path: Path) -> None:
    base = ["<s>", "a", "b", "c", "d"]
    ct = _tokenizer(tmp_path / "ct", ["<s>", "a", "c", "b", "d", "ক", "খ"])  # swapped 2/3, two extra tokens
    sft = _tokenizer(tmp_path / "sft", base)
    with pytest.raises(TokenizerMismatchError, match=r"id 2 is 'c' in the CT x but 'b' in the SFT y"):
        check_same_tokenizer({"CT x": ct, "SFT y": sft})


def test_an_extended_ct_vocabulary_and_a_missing_file_are_accepted(tmp_path: Path, tiny_family_extended) -> None:
    check_same_tokenizer(
        {"CT": tiny_family_extended.ct, "SFT": tiny_family_extended.sft, "base": tiny_family_extended.base}
    )
    ct = id_to_token(tiny_family_extended.ct)
    sft = id_to_token(tiny_family_extended.sft)
    assert ct is not None and sft is not None and len(ct) > len(sft)
    check_same_tokenizer({"CT": _tokenizer(tmp_path / "ct", ["a"]), "SFT": tmp_path})  # no vocabulary: not compared


def test_added_tokens_count(tmp_path: Path) -> None:
    ct = _tokenizer(tmp_path / "ct", ["a", "b"], added={2: "<pad>"})
    sft = _tokenizer(tmp_path / "sft", ["a", "b"], added={2: "<unk>"})
    with pytest.raises(TokenizerMismatchError, match="id 2 is '<pad>'"):
        check_same_tokenizer({"CT": ct, "SFT": sft})


def test_a_huge_declared_header_is_refused_unread(tmp_path: Path, capsys) -> None:
    import resource

    path = tmp_path / "big-header.safetensors"
    declared = 98_800_000
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", declared))
        fh.write(b"{" + b" " * 1000)
        fh.truncate(8 + declared + 1024)  # sparse: the declared size is real, the bytes are not
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"over the 6175064-byte bound.*refused unread"):
        read_header(path)
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    with capsys.disabled():
        print(f"\n[limits] 98.8 MB declared safetensors header: refused unread, peak RSS {peak_growth / 1024:+.2f} MB")
    assert peak_growth < 10 * 1024  # KiB: nothing was read
    assert header_bound(10**12) == 16 * 1024 * 1024 and header_bound(1000) == 1 << 20


def test_the_provenance_line_round_trips_and_a_card_without_one_records_none() -> None:
    line = provenance_line(["bob/x", "alice/x", "alice/x"])
    assert read_provenance(f"# card\n\n{line}\n") == ["alice/x", "bob/x"]
    assert read_provenance("# a card\n") is None


def test_a_publish_uploads_no_code_and_no_auto_map(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {"AutoModel": "m.M"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["t.T", None]}}))
    (tmp_path / "modeling_m.py").write_text("print('pwned')\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.py").write_text("x = 1\n")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    files = publishable_files(tmp_path)
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer_config.json"]
    for name in ("config.json", "tokenizer_config.json"):
        body = files[name]
        assert isinstance(body, bytes) and b"auto_map" not in body
    assert json.loads(files["config.json"]) == {"model_type": "llama"}  # type: ignore[arg-type]


def test_no_code_path_loads_with_trust_remote_code() -> None:
    pattern = re.compile(r"trust_remote_code\s*[=:]\s*(True|1|\"true\")|trust_remote_code=(?!False)")
    offenders = []
    for folder in ("registry", "bot", "space"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_ray_cluster_example_starts_a_head_workers_and_a_bot_with_options_that_exist() -> None:
    import shlex

    import yaml
    from typer.testing import CliRunner

    from bot.cli import app

    config = yaml.safe_load((REPO_ROOT / "docs" / "examples" / "ray-cluster.yaml").read_text())
    assert config["provider"]["type"] == "local" and len(config["provider"]["worker_ips"]) == config["min_workers"]
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head --port=6379" in head and "--num-cpus=0" in head
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    serve = next(c for c in config["head_start_ray_commands"] if "bot serve" in c)
    words = shlex.split(serve.split("bot serve", 1)[1].split(">", 1)[0])
    options = [w for w in words if w.startswith("--")]
    assert {"--executor", "--ray-address", "--cache-max-gb"} <= set(options)
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).stdout
    assert [o for o in options if o not in help_text] == []
