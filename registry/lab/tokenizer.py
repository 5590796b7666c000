"""One byte-level BPE tokenizer for the lab, trained on English plus the target languages.

Byte-level BPE never maps text to an unknown token, so any script (Bengali, Tibetan, Uyghur in
Arabic script, Mongolian Cyrillic) round-trips exactly; the merges only decide how many tokens a
sentence costs. The result is saved as a `PreTrainedTokenizerFast`, so `AutoTokenizer` loads it
like any Hub tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8192,
    min_frequency: int = 2,
    model_max_length: int = 1024,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it for `transformers`.

    Special tokens get the first ids: `<pad>`=0, `<s>`=1, `</s>`=2. The tokenizer adds `<s>` in
    front of every sequence (as Llama's does) and nothing at the end.

    Args:
        texts: training text; mix every language the models will see.
        vocab_size: the target vocabulary size, special tokens and the 256 byte symbols included.
        min_frequency: the fewest occurrences a pair needs to become a merge.
        model_max_length: the longest input the models built on it accept.

    Returns:
        The tokenizer, ready for `save_pretrained`.

    Raises:
        ValueError: if `vocab_size` leaves no room beyond the byte alphabet.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must exceed the 256 byte symbols plus special tokens")
    core = Tokenizer(models.BPE())
    # add_prefix_space=False: text is not rewritten, so decode(encode(x)) == x byte for byte.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    bos_id = core.token_to_id(BOS_TOKEN)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    logger.info("Trained a byte-level BPE tokenizer: %d tokens", core.get_vocab_size())
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> Path:
    """Write the tokenizer files (`tokenizer.json`, `tokenizer_config.json`, ...) into `out_dir`.

    Args:
        tokenizer: the tokenizer to save.
        out_dir: a checkpoint directory; created if missing.

    Returns:
        `out_dir`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
