"""registry.datarepo: which files of a ../shared/data folder are uploaded, and the configs its card declares."""

from __future__ import annotations

from pathlib import Path

from registry.datarepo import data_files, dataset_card, dataset_configs


def test_data_files_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    for rel in ("sib200/ben_Beng/train.jsonl", ".cache/x.jsonl", "sib200/.DS_Store", "manifest.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    assert data_files(tmp_path) == ["manifest.json", "sib200/ben_Beng/train.jsonl"]


def test_dataset_configs_for_the_shared_data_layout() -> None:
    paths = [
        "sib200/ben_Beng/train.jsonl",
        "sib200/ben_Beng/dev.jsonl",
        "sib200/ben_Beng/test.jsonl",
        "flores200/devtest/ben_Beng.jsonl",
        "flores200/devtest/eng_Latn.jsonl",
        "sib200/labels.txt",
        "manifest.json",
    ]
    configs = {c["config_name"]: c["data_files"] for c in dataset_configs(paths)}
    assert set(configs) == {"sib200-ben_Beng", "flores200-devtest-ben_Beng", "flores200-devtest-eng_Latn"}
    assert {f["split"]: f["path"] for f in configs["sib200-ben_Beng"]} == {
        "train": "sib200/ben_Beng/train.jsonl",
        "validation": "sib200/ben_Beng/dev.jsonl",
        "test": "sib200/ben_Beng/test.jsonl",
    }
    card = dataset_card(paths, readme="# Original\n")
    assert card.startswith("---\n") and "\nconfigs:\n" in card and card.endswith("# Original\n")


def test_a_readme_with_its_own_front_matter_keeps_one() -> None:
    # The card used to be a second front matter glued above the README's own.
    import yaml

    readme = "---\nlicense: cc-by-sa-4.0\ntags: [flores]\n---\n# Original\n"
    card = dataset_card(["sib200/ben_Beng/train.jsonl"], readme=readme)
    assert card.count("---\n") == 2 and card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-sa-4.0" and meta["tags"] == ["flores", "mergeling-eval-data"]
    assert meta["configs"][0]["data_files"][0]["path"] == "sib200/ben_Beng/train.jsonl"
    assert card.rstrip().endswith("# Original")
