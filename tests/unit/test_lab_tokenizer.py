"""The lab tokenizer: byte-level BPE that round-trips every script and loads with AutoTokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.lab.corpora import synthetic_corpora
from registry.lab.tokenizer import save_tokenizer, train_tokenizer

# Sentences written here (not read from evaluation data) in the scripts the lab serves.
SAMPLES = {
    "ben_Beng": "বাংলা ভাষা দক্ষিণ এশিয়ার একটি ইন্দো-আর্য ভাষা।",
    "bod_Tibt": "བོད་ཀྱི་སྐད་ཡིག་ནི་བོད་ཀྱི་སྐད་ཡིག་རེད།",
    "uig_Arab": "ئۇيغۇر تىلى تۈركىي تىللار ئائىلىسىگە تەۋە.",
    "khk_Cyrl": "Монгол хэл бол Монгол улсын албан ёсны хэл юм.",
    "eng_Latn": "  Leading spaces, tabs\tand\nnewlines survive; so do emoji 🙂 and accents: café.",
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpora = synthetic_corpora(languages=("ben_Beng", "uig_Arab"), seed=0)
    texts = list(corpora.english[:200]) + [t for docs in corpora.target.values() for t in docs[:200]]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_round_trip_every_script(tokenizer_dir: Path, lang: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = SAMPLES[lang]
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_and_vocab(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert len(tokenizer) == 1024
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 1024


def test_trained_merges_compress_the_training_script(tokenizer_dir: Path) -> None:
    """Bengali was in the training text, Tibetan was not: BPE merges make Bengali cheaper per byte."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    corpora = synthetic_corpora(languages=("ben_Beng",), seed=1)  # same generator, fresh sentences
    ben = corpora.target["ben_Beng"][0]
    bytes_per_token = len(ben.encode()) / (len(tokenizer(ben)["input_ids"]) - 1)
    assert bytes_per_token > 2.0
    tib = SAMPLES["bod_Tibt"]
    assert len(tib.encode()) / (len(tokenizer(tib)["input_ids"]) - 1) < 1.5


def test_rejects_a_vocab_without_room() -> None:
    with pytest.raises(ValueError, match="vocab_size=200"):
        train_tokenizer(["abc"], vocab_size=200)


def test_real_data_round_trip(shared_data: Path, tmp_path: Path) -> None:
    """Trained on mono/ text, the tokenizer round-trips held-out FLORES sentences exactly."""
    from transformers import AutoTokenizer

    texts = []
    for lang in ("eng_Latn", "ben_Beng", "uig_Arab"):
        with (shared_data / "mono" / "udhr" / f"{lang}.jsonl").open(encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle]
    save_tokenizer(train_tokenizer(texts, vocab_size=1024), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    for lang in ("ben_Beng", "bod_Tibt", "uig_Arab", "khk_Cyrl"):
        with (shared_data / "flores200" / "devtest" / f"{lang}.jsonl").open(encoding="utf-8") as handle:
            sentences = [json.loads(line)["text"] for _, line in zip(range(20), handle, strict=False)]
        for sentence in sentences:
            assert tokenizer.decode(tokenizer(sentence)["input_ids"], skip_special_tokens=True) == sentence
