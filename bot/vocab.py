"""Same tokenizer over the shared vocabulary: a merge of models that map ids to different strings is
meaningless (row i of one embedding means another token than row i of the other).

The id -> string map is read from `tokenizer.json` (the model's vocabulary plus `added_tokens`),
else `vocab.json`. Only the ids both sides have are compared: a CT whose vocabulary goes beyond
the base's is the documented extended-vocabulary case. A side without a readable vocabulary file
is not compared (the engine's shape checks still apply).
"""

from __future__ import annotations

import json
from pathlib import Path

from bot.errors import TokenizerMismatchError

MAX_VOCAB_FILE = 64 * 1024 * 1024  # a 256k-token tokenizer.json is ~20 MB


def id_to_token(folder: Path) -> dict[int, str] | None:
    """The folder's vocabulary as {id: string}, or None when it has no readable vocabulary file."""
    for name in ("tokenizer.json", "vocab.json"):
        path = folder / name
        if not path.is_file() or path.stat().st_size > MAX_VOCAB_FILE:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(data, dict):
            continue
        vocab = data.get("model", {}).get("vocab") if name == "tokenizer.json" else data
        out: dict[int, str] = {}
        if isinstance(vocab, dict):  # BPE / WordPiece: {string: id}
            out = {int(i): str(t) for t, i in vocab.items() if isinstance(i, int)}
        elif isinstance(vocab, list):  # Unigram: [[string, score], ...] by id
            out = {i: str(item[0]) for i, item in enumerate(vocab) if isinstance(item, list) and item}
        for added in data.get("added_tokens") or [] if name == "tokenizer.json" else []:
            if isinstance(added, dict) and isinstance(added.get("id"), int):
                out[added["id"]] = str(added.get("content"))
        if out:
            return out
    return None


def check_same_tokenizer(models: dict[str, Path]) -> None:
    """Refuse when two models map a shared id to different strings.

    Args:
        models: label (e.g. "CT alice/x", "SFT bob/y", "base z/w") -> local model folder; the first
            is compared with each of the others.

    Raises:
        TokenizerMismatchError: names the first differing id and both strings.
    """
    vocabs = {label: id_to_token(path) for label, path in models.items()}
    known = [(label, vocab) for label, vocab in vocabs.items() if vocab is not None]
    if len(known) < 2:
        return
    (first, ref), others = known[0], known[1:]
    for label, vocab in others:
        for token_id in sorted(ref.keys() & vocab.keys()):
            if ref[token_id] != vocab[token_id]:
                raise TokenizerMismatchError(
                    f"the tokenizers differ: id {token_id} is {ref[token_id]!r} in the {first} but "
                    f"{vocab[token_id]!r} in the {label}; merge only models trained with the same tokenizer "
                    "(a CT may add tokens after the shared ones)"
                )
