"""`registry lab build`: the paper's setup in miniature, offline, on a CPU.

tokenizer -> tiny Llama base (pre-trained on English) -> CT-X per language (continued
pre-training on X text mixed 4:1 with English) -> SFT (the base fine-tuned on English task data in
the evaluation prompt format) -> optionally CT-then-SFT (`ct_sft`: the same SFT stage run on each CT
checkpoint, the paper's baseline). Each checkpoint is a Hugging Face directory with a model card;
`lab.json` beside them records the settings, the data, the training losses and how far each model
moved from the base (relative L2 norms of the weight deltas, overall and per tensor group).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.errors import LabError, OutputExistsError
from registry.lab.cards import LabCardInfo, write_lab_card
from registry.lab.corpora import ENGLISH, LabCorpora, load_corpora
from registry.lab.deltas import delta_norms
from registry.lab.sft import PromptFormat, instruction_examples, sib_examples
from registry.lab.train import Example, TrainResult, save_generation_config, train_causal_lm

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

MANIFEST_NAME = "lab.json"
STAGE_RECORD = "lab_train.json"  # in each checkpoint: its training run; marks the stage finished


class LabConfig(BaseModel):
    """Everything that decides what `build_lab` produces (recorded in `lab.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    languages: tuple[str, ...] = ("ben_Beng", "khk_Cyrl", "uig_Arab")
    seed: int = 0
    repo_prefix: str = "mergeling-lab"
    # model shape: ~3 M parameters at the defaults, half of them in the two embedding matrices
    vocab_size: int = Field(default=8192, ge=512)
    hidden_size: int = Field(default=128, ge=16)
    intermediate_size: int = Field(default=384, ge=16)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    max_position_embeddings: int = Field(default=1024, ge=64)
    # training
    base_steps: int = Field(default=1000, ge=1)
    ct_steps: int = Field(default=400, ge=1)
    sft_steps: int = Field(default=300, ge=1)
    # intermediate checkpoints of each CT run (same run, same data order): `ct-<lang>-step<N>/`
    ct_save_steps: tuple[int, ...] = ()
    # CT-then-SFT (the paper's baseline): the SFT stage (same data, steps, learning rate and seed)
    # run on each final CT and each saved CT step: `ct-<lang>-sft/`, `ct-<lang>-step<N>-sft/`.
    # Off by default: it adds (1 + saved steps) SFT runs per language to the build.
    ct_sft: bool = False
    base_lr: float = Field(default=2e-3, gt=0)
    ct_lr: float = Field(default=5e-4, gt=0)
    sft_lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=16, ge=1)
    seq_len: int = Field(default=128, ge=16)
    sft_seq_len: int = Field(default=256, ge=16)
    ct_english_share: float = Field(default=0.2, ge=0, lt=1)  # 4:1 target:English, as the authors did
    sft_shots: int = Field(default=5, ge=0)
    # Alpaca answers are ~100x longer than a SIB label, so any share of them dominates the token loss
    # and the tiny SFT barely learns the task (docs/lab.md: 0-shot SIB 0.34 with 25 %, 0.42 with none).
    sft_instruction_share: float = Field(default=0.0, ge=0, lt=1)

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one target language is needed, e.g. ben_Beng")
        from registry.languages import check_language

        for code in value:
            if code == ENGLISH:
                raise ValueError(f"language {code!r} must be a non-English FLORES-200 code such as ben_Beng")
            check_language(code)
        return value

    @field_validator("ct_save_steps")
    @classmethod
    def _check_save_steps(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(step < 1 for step in value):
            raise ValueError(f"ct_save_steps must be positive step counts, got {list(value)}")
        return tuple(sorted(set(value)))


def ct_step_dir(out_dir: Path, language: str, step: int) -> Path:
    """Where `build_lab` saves the CT-`language` checkpoint after `step` steps (`LabConfig.ct_save_steps`)."""
    return out_dir / f"ct-{language}-step{step}"


@dataclass(frozen=True)
class LabCheckpoint:
    """One checkpoint the lab wrote."""

    name: str
    path: Path
    repo_id: str
    role: str
    language: str
    parent: str | None = None  # the repo id it was trained from, when not the base (CT-then-SFT: its CT)


@dataclass(frozen=True)
class LabResult:
    """What `build_lab` wrote: the checkpoints (base first, then CT per language, then SFT) and the manifest."""

    out_dir: Path
    checkpoints: tuple[LabCheckpoint, ...]
    manifest: Path
    synthetic: bool


def build_lab(
    out_dir: Path,
    *,
    config: LabConfig,
    data_dir: Path | None,
    prompt_format: PromptFormat | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> LabResult:
    """Build tokenizer, base, CT-X per language and SFT into `out_dir`.

    Each trained checkpoint gets a `lab_train.json` (what its training run did). With `resume`,
    a stage whose checkpoint already has one is kept as it is, so a long build that was stopped
    (or whose stages were run as separate processes) finishes without retraining; the settings
    must be the same, which `lab.json` records.

    Args:
        out_dir: the output directory (`base/`, `ct-<lang>/`, `sft/`, `lab.json`).
        config: sizes, steps and learning rates.
        data_dir: a `../shared/data`-style directory, or None for the synthetic fallback.
        prompt_format: the SIB-200 prompt format of the evaluation tasks (default: `PromptFormat()`).
        overwrite: allow writing into a non-empty `out_dir`.
        resume: keep finished stages (implies `overwrite`).
        progress: show progress bars.

    Returns:
        The checkpoints and manifest written.

    Raises:
        OutputExistsError: if `out_dir` is not empty and neither `overwrite` nor `resume` is set.
        DataNotFoundError: if `data_dir` lacks text for a language.
        LabError: if training fails.
    """
    from registry.lab.tokenizer import train_tokenizer

    if out_dir.exists() and any(out_dir.iterdir()) and not (overwrite or resume):
        raise OutputExistsError(
            f"{out_dir} is not empty; choose another --out, or pass --overwrite (or --resume to keep finished stages)",
            path=out_dir,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = prompt_format or PromptFormat()
    corpora = load_corpora(data_dir, languages=config.languages, seed=config.seed)
    if corpora.synthetic:
        logger.warning("NO DATA DIRECTORY FOUND: the lab is training on SYNTHETIC text; its numbers mean nothing.")
    names = _repo_names(config)
    base_dir = out_dir / "base"
    trained: dict[str, TrainResult] = {}

    def train_base() -> TrainResult:
        tokenizer = train_tokenizer(_tokenizer_texts(corpora, seed=config.seed), vocab_size=config.vocab_size,
                                    model_max_length=config.max_position_embeddings)  # fmt: skip
        _init_base(base_dir, tokenizer=tokenizer, config=config)
        return train_causal_lm(
            base_dir, corpora.english, out_dir=base_dir, steps=config.base_steps, lr=config.base_lr,
            batch_size=config.batch_size, seq_len=config.seq_len, seed=config.seed, progress=progress, desc="base",
        )  # fmt: skip

    trained["base"] = _stage(base_dir, resume=resume, train=train_base)
    from transformers import AutoTokenizer

    tokenizer = cast("PreTrainedTokenizerFast", AutoTokenizer.from_pretrained(str(base_dir)))
    checkpoints = [LabCheckpoint("base", base_dir, names["base"], "base", ENGLISH)]
    for index, lang in enumerate(config.languages, start=1):
        ct_dir = out_dir / f"ct-{lang}"

        def train_ct(lang: str = lang, ct_dir: Path = ct_dir, index: int = index) -> TrainResult:
            texts = _ct_mix(corpora, lang, tokenizer=tokenizer, english_share=config.ct_english_share, seed=config.seed)
            return train_causal_lm(
                base_dir, texts, out_dir=ct_dir, steps=config.ct_steps, lr=config.ct_lr, batch_size=config.batch_size,
                seq_len=config.seq_len, seed=config.seed + index, progress=progress, desc=f"ct-{lang}",
                save_at={step: ct_step_dir(out_dir, lang, step) for step in config.ct_save_steps if step < config.ct_steps},
            )  # fmt: skip

        trained[f"ct-{lang}"] = _stage(ct_dir, resume=resume, train=train_ct)
        checkpoints.append(LabCheckpoint(f"ct-{lang}", ct_dir, names[f"ct-{lang}"], "ct", lang))
    sft_dir = out_dir / "sft"

    def train_sft() -> TrainResult:
        return train_causal_lm(
            base_dir, _sft_mix(corpora, fmt=fmt, config=config), out_dir=sft_dir, steps=config.sft_steps,
            lr=config.sft_lr, batch_size=config.batch_size, seq_len=config.sft_seq_len, seed=config.seed + 100,
            progress=progress, desc="sft",
        )  # fmt: skip

    trained["sft"] = _stage(sft_dir, resume=resume, train=train_sft)
    checkpoints.append(LabCheckpoint("sft", sft_dir, names["sft"], "sft", ENGLISH))
    if config.ct_sft:
        for name, start, parent, lang in _ct_sft_starts(out_dir, config, names):
            target = out_dir / f"{name}-sft"

            def train_ct_sft(start: Path = start, target: Path = target, name: str = name) -> TrainResult:
                # The SFT stage exactly, started from the CT checkpoint instead of the base.
                return train_causal_lm(
                    start, _sft_mix(corpora, fmt=fmt, config=config), out_dir=target, steps=config.sft_steps,
                    lr=config.sft_lr, batch_size=config.batch_size, seq_len=config.sft_seq_len, seed=config.seed + 100,
                    progress=progress, desc=f"{name}-sft",
                )  # fmt: skip

            trained[f"{name}-sft"] = _stage(target, resume=resume, train=train_ct_sft)
            repo_id = f"{config.repo_prefix}/tiny-{name}-sft"
            checkpoints.append(LabCheckpoint(f"{name}-sft", target, repo_id, "ct_sft", lang, parent=parent))
    manifest = _finish(out_dir, checkpoints, trained, corpora=corpora, config=config, fmt=fmt, data_dir=data_dir)
    return LabResult(out_dir=out_dir, checkpoints=tuple(checkpoints), manifest=manifest, synthetic=corpora.synthetic)


def _ct_sft_starts(out_dir: Path, config: LabConfig, names: dict[str, str]) -> list[tuple[str, Path, str, str]]:
    """(name, directory, repo id, language) of every CT checkpoint a CT-then-SFT starts from:
    each final CT, then each of its saved steps (`ct-<lang>-step<N>`), in step order."""
    starts = []
    for lang in config.languages:
        starts.append((f"ct-{lang}", out_dir / f"ct-{lang}", names[f"ct-{lang}"], lang))
        for step in config.ct_save_steps:
            if step < config.ct_steps:
                name = f"ct-{lang}-step{step}"
                starts.append((name, ct_step_dir(out_dir, lang, step), f"{config.repo_prefix}/tiny-{name}", lang))
    return starts


def _stage(model_dir: Path, *, resume: bool, train: Callable[[], TrainResult]) -> TrainResult:
    """One stage: with `resume`, the recorded run of a finished checkpoint; else train and record it."""
    done = _finished(model_dir) if resume else None
    return done if done is not None else _record(train())


def _record(result: TrainResult) -> TrainResult:
    """Write `lab_train.json` into the trained checkpoint: the mark that its stage is finished.

    Written to a temporary name and renamed, so a build stopped mid-write never leaves a
    half-written marker (which `--resume` would take for a finished stage, or fail to read).
    """
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    path = result.out_dir / STAGE_RECORD
    partial = path.with_name(f".{STAGE_RECORD}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return result


def _finished(model_dir: Path) -> TrainResult | None:
    """The recorded training run of a finished stage, or None when it must be (re)trained."""
    path = model_dir / STAGE_RECORD
    if not (path.is_file() and any(model_dir.glob("*.safetensors"))):
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        saved = tuple(tuple(item) for item in record.get("checkpoints", ()))
        result = TrainResult(**{**record, "out_dir": Path(record["out_dir"]), "checkpoints": saved})
    except (ValueError, TypeError, KeyError) as exc:  # a marker from another version, or damaged
        logger.warning("Retraining %s: its %s cannot be read (%s)", model_dir, STAGE_RECORD, exc)
        return None
    logger.info("Resuming: keeping %s (trained earlier, %d steps)", model_dir, result.steps)
    return result


def _repo_names(config: LabConfig) -> dict[str, str]:
    names = {"base": f"{config.repo_prefix}/tiny-base", "sft": f"{config.repo_prefix}/tiny-sft"}
    names.update({f"ct-{lang}": f"{config.repo_prefix}/tiny-ct-{lang}" for lang in config.languages})
    return names


def _tokenizer_texts(corpora: LabCorpora, *, seed: int) -> list[str]:
    """English and every target language, each capped at the same size so no script starves."""
    rng = random.Random(seed)
    groups = [list(corpora.english), *(list(docs) for docs in corpora.target.values())]
    cap = 600_000  # characters per language; enough for an 8k vocabulary, fast to train
    texts: list[str] = []
    for docs in groups:
        rng.shuffle(docs)
        size = 0
        for doc in docs:
            if size >= cap:
                break
            texts.append(doc)
            size += len(doc)
    return texts


def _init_base(path: Path, *, tokenizer: PreTrainedTokenizerFast, config: LabConfig) -> Path:
    """Write a randomly initialised Llama with the tokenizer's vocabulary (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from registry.lab.tokenizer import save_tokenizer

    if len(tokenizer) > config.vocab_size:
        raise LabError(f"tokenizer has {len(tokenizer)} tokens but vocab_size={config.vocab_size}; raise vocab_size")
    model_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=False,  # as Llama-2: CT and SFT move input and output embeddings separately
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(config.seed)
    LlamaForCausalLM(model_config).save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    save_generation_config(path)
    return path


def _ct_mix(
    corpora: LabCorpora, lang: str, *, tokenizer: PreTrainedTokenizerFast, english_share: float, seed: int
) -> list[str]:
    """Target documents plus English documents making up `english_share` of the tokens."""
    rng = random.Random(seed)
    target = list(corpora.target[lang])
    target_tokens = sum(len(ids) for ids in tokenizer(target, verbose=False)["input_ids"])
    wanted = target_tokens * english_share / (1 - english_share)
    english = list(corpora.english)
    rng.shuffle(english)
    mix, tokens = [], 0
    while tokens < wanted:  # cycles through English again if it is shorter than wanted
        for doc in english:
            if tokens >= wanted:
                break
            mix.append(doc)
            tokens += len(tokenizer(doc, verbose=False)["input_ids"])
    logger.info("CT-%s mix: %d target tokens, %d English tokens", lang, target_tokens, tokens)
    return target + mix


def _sft_mix(corpora: LabCorpora, *, fmt: PromptFormat, config: LabConfig) -> list[Example]:
    sib = sib_examples(corpora.sib_train, fmt=fmt, max_shots=config.sft_shots, seed=config.seed, repeats=2)
    n_instr = round(len(sib) * config.sft_instruction_share / (1 - config.sft_instruction_share))
    instructions = instruction_examples(corpora.instructions[:n_instr])
    return sib + instructions


def _finish(
    out_dir: Path,
    checkpoints: list[LabCheckpoint],
    trained: dict[str, TrainResult],
    *,
    corpora: LabCorpora,
    config: LabConfig,
    fmt: PromptFormat,
    data_dir: Path | None,
) -> Path:
    """Write generation configs, model cards and `lab.json`; return the manifest path."""
    base = checkpoints[0]
    entries = {}
    for ckpt in checkpoints:
        save_generation_config(ckpt.path)
        norms = None if ckpt is base else delta_norms(ckpt.path, base.path)
        n_params = _count_params(ckpt.path)
        result = trained[ckpt.name]
        write_lab_card(
            ckpt.path,
            LabCardInfo(
                repo_id=ckpt.repo_id, role=ckpt.role, language=ckpt.language,  # type: ignore[arg-type]
                base_model=None if ckpt is base else (ckpt.parent or base.repo_id),
                training=f"{result.steps} steps, {result.tokens} loss-bearing tokens, loss {result.first_loss:.3f} -> "
                f"{result.last_loss:.3f}.",
                sources=corpora.sources, license=_license(ckpt.role, corpora), n_params=n_params,
                delta=None if norms is None else norms["total"], synthetic=corpora.synthetic,
            ),
        )  # fmt: skip
        entries[ckpt.name] = {
            "path": str(ckpt.path),
            "repo_id": ckpt.repo_id,
            "role": ckpt.role,
            "language": ckpt.language,
            **({"parent": ckpt.parent} if ckpt.parent else {}),
            "n_params": n_params,
            "train": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()},
            "delta_vs_base": norms,
        }
    manifest = {
        "config": config.model_dump(mode="json"),
        "data_dir": None if data_dir is None else str(data_dir),
        "synthetic": corpora.synthetic,
        "sources": list(corpora.sources),
        "sib_prompt_format": asdict(fmt),
        "checkpoints": entries,
    }
    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _license(role: str, corpora: LabCorpora) -> str:
    if corpora.synthetic:
        return "apache-2.0"
    if role in ("sft", "ct_sft") and any("alpaca" in s for s in corpora.sources):
        return "cc-by-nc-4.0"  # the Alpaca records are CC BY-NC
    return "cc-by-sa-4.0"  # NTREX-128 / FLORES-derived SIB text


def _count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for name in handle.keys():
                total += math.prod(handle.get_slice(name).get_shape())
    return total
