"""The lab's training text: real data from a `../shared/data`-style directory, or a synthetic stand-in.

Only training-side sources are read: `mono/` (NTREX-128, UDHR, OdiaNLP, the C4 sample) for
pre-training and continued pre-training, and `sib200/eng_Latn/train.jsonl` plus `sft/` for the
SFT model. FLORES and SIB dev/test are evaluation data and are never read here; SIB train
records with `index_id >= 997` are FLORES devtest sentences, so they are dropped too.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import DataNotFoundError

logger = logging.getLogger(__name__)

ENGLISH = "eng_Latn"
FLORES_DEVTEST_FIRST_INDEX = 997  # SIB index_id at and above this is a FLORES devtest sentence
SIB_LABELS = (
    "science/technology",
    "travel",
    "politics",
    "sports",
    "health",
    "entertainment",
    "geography",
)
_ENGLISH_SOURCES = ("mono/c4_sample/eng_Latn.jsonl", "mono/ntrex128/eng_Latn.jsonl", "mono/udhr/eng_Latn.jsonl")
_TARGET_SOURCES = ("mono/ntrex128/{lang}.jsonl", "mono/udhr/{lang}.jsonl", "mono/odianlp/{lang}.jsonl")


@dataclass(frozen=True)
class SibRecord:
    """One SIB-200 training record (never a FLORES devtest sentence)."""

    index_id: int
    text: str
    category: str


@dataclass(frozen=True)
class Instruction:
    """One instruction-following record (Alpaca format)."""

    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class LabCorpora:
    """Everything the lab trains on.

    Attributes:
        english: English documents for the base and the 1-in-5 English share of CT.
        target: documents per target language code, for CT.
        sib_train: English SIB-200 train records, FLORES devtest sentences removed.
        instructions: Alpaca-style records for the SFT mix.
        synthetic: True when no real data was found and everything above was generated.
        sources: the files read, relative to the data directory.
    """

    english: tuple[str, ...]
    target: dict[str, tuple[str, ...]]
    sib_train: tuple[SibRecord, ...]
    instructions: tuple[Instruction, ...]
    synthetic: bool
    sources: tuple[str, ...]


def resolve_data_dir(data_dir: Path | None, *, cwd: Path) -> Path | None:
    """The data directory to use: `data_dir`, else `cwd/../shared/data` if it exists, else None.

    Args:
        data_dir: an explicit directory (must exist).
        cwd: the directory the default is looked up from.

    Returns:
        The directory, or None when there is no data (the synthetic fallback applies).

    Raises:
        DataNotFoundError: if `data_dir` was given but does not hold `mono/`.
    """
    if data_dir is not None:
        if not (data_dir / "mono").is_dir():
            raise DataNotFoundError(
                f"--data-dir {data_dir} has no mono/ folder; point it at a directory laid out like ../shared/data",
                path=data_dir,
            )
        return data_dir
    default = (cwd / ".." / "shared" / "data").resolve()
    return default if (default / "mono").is_dir() else None


def load_corpora(data_dir: Path | None, *, languages: tuple[str, ...], seed: int) -> LabCorpora:
    """Read the lab's training text from `data_dir`, or generate a synthetic stand-in when None.

    Args:
        data_dir: a `../shared/data`-style directory, or None for synthetic data.
        languages: target language codes (`ben_Beng`, ...).
        seed: seeds the synthetic generator.

    Returns:
        The corpora.

    Raises:
        DataNotFoundError: if a language has no `mono/` text or English SIB train data is missing.
    """
    if data_dir is None:
        return synthetic_corpora(languages=languages, seed=seed)
    sources: list[str] = []
    english = _read_sources(data_dir, _ENGLISH_SOURCES, sources)
    target = {}
    for lang in languages:
        docs = _read_sources(data_dir, tuple(s.format(lang=lang) for s in _TARGET_SOURCES), sources)
        if not docs:
            raise DataNotFoundError(
                f"no mono/ text for {lang} in {data_dir}; expected one of "
                f"{[s.format(lang=lang) for s in _TARGET_SOURCES]}",
                path=data_dir,
            )
        target[lang] = docs
    sib_path = data_dir / "sib200" / ENGLISH / "train.jsonl"
    if not sib_path.is_file():
        raise DataNotFoundError(f"{sib_path} is missing: the SFT model needs English SIB-200 train data", path=sib_path)
    sib = tuple(
        SibRecord(index_id=int(r["index_id"]), text=r["text"], category=r["category"])
        for r in _read_jsonl(sib_path)
        if int(r["index_id"]) < FLORES_DEVTEST_FIRST_INDEX
    )
    sources.append(str(sib_path.relative_to(data_dir)))
    alpaca_path = data_dir / "sft" / "alpaca_en_demo.jsonl"
    instructions: tuple[Instruction, ...] = ()
    if alpaca_path.is_file():
        instructions = tuple(
            Instruction(instruction=r["instruction"], input=r.get("input", ""), output=r["output"])
            for r in _read_jsonl(alpaca_path)
        )
        sources.append(str(alpaca_path.relative_to(data_dir)))
    return LabCorpora(
        english=english,
        target=target,
        sib_train=sib,
        instructions=instructions,
        synthetic=False,
        sources=tuple(sources),
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _read_sources(data_dir: Path, relative: tuple[str, ...], sources: list[str]) -> tuple[str, ...]:
    docs: list[str] = []
    for rel in relative:
        path = data_dir / rel
        if path.is_file():
            docs += [r["text"] for r in _read_jsonl(path) if r.get("text", "").strip()]
            sources.append(rel)
    return tuple(docs)


# -- synthetic fallback ---------------------------------------------------------------------
# Unicode blocks of the scripts, so the synthetic "languages" exercise the tokenizer like the real ones.
_SCRIPT_BLOCKS = {
    "Beng": (0x0985, 0x09B9),
    "Cyrl": (0x0430, 0x044F),
    "Arab": (0x0627, 0x064A),
    "Tibt": (0x0F40, 0x0F6C),
    "Taml": (0x0B85, 0x0BB9),
    "Telu": (0x0C05, 0x0C39),
    "Orya": (0x0B05, 0x0B39),
    "Latn": (0x0061, 0x007A),
}
_TOPIC_WORDS = {
    "science/technology": "research computer scientists energy software data laboratory study",
    "travel": "hotel tourists flight visit city trip airport beach",
    "politics": "government election minister parliament party president vote law",
    "sports": "match team player goal season championship coach win",
    "health": "doctors patients disease hospital virus treatment medicine health",
    "entertainment": "film music festival actor concert show album singer",
    "geography": "river mountain island region ocean country climate coast",
}
_FILLER = "the a of in and to was is that on for with as by at from it has this were".split()


def synthetic_corpora(*, languages: tuple[str, ...], seed: int) -> LabCorpora:
    """Generate stand-in corpora (used when no data directory exists) so the demo still runs.

    English is topic keywords in filler; each target language is pseudo-words drawn from its
    script's Unicode block with a seeded, Zipf-like vocabulary, so it compresses like text.

    Args:
        languages: target language codes; the script is the part after `_`.
        seed: seeds the generator.

    Returns:
        Corpora with `synthetic=True`.
    """
    rng = random.Random(seed)
    topics = list(_TOPIC_WORDS)

    def english_sentence(topic: str) -> str:
        topic_words = _TOPIC_WORDS[topic].split()
        words = [rng.choice(topic_words) if rng.random() < 0.3 else rng.choice(_FILLER) for _ in range(14)]
        return " ".join(words).capitalize() + "."

    english = tuple(" ".join(english_sentence(rng.choice(topics)) for _ in range(6)) for _ in range(600))
    target = {}
    for lang in languages:
        low, high = _SCRIPT_BLOCKS.get(lang.split("_")[-1], _SCRIPT_BLOCKS["Latn"])
        vocab = ["".join(chr(rng.randint(low, high)) for _ in range(rng.randint(2, 6))) for _ in range(400)]
        weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
        target[lang] = tuple(" ".join(rng.choices(vocab, weights, k=60)) + "." for _ in range(600))
    sib = []
    for index in range(500):
        topic = rng.choice(topics)
        sib.append(SibRecord(index_id=index, text=english_sentence(topic), category=topic))
    instructions = tuple(
        Instruction(instruction=f"Name the topic of: {english_sentence(t)}", input="", output=t) for t in topics * 10
    )
    return LabCorpora(
        english=english, target=target, sib_train=tuple(sib), instructions=instructions, synthetic=True, sources=()
    )
