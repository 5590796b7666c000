"""SFT examples for the lab: English task data in the exact format the evaluation prompts use.

The SIB-200 examples copy how lm-eval builds a k-shot log-likelihood prompt: shots are
`text(doc) + target_delimiter + target(doc)`, joined by `fewshot_delimiter`, then the query's
`text(doc)`; the answer is `target_delimiter + label`. Training on that shape (with 0..k shots)
teaches the tiny SFT model the task as `registry eval` asks it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from registry.lab.corpora import Instruction, SibRecord
from registry.lab.train import Example


@dataclass(frozen=True)
class PromptFormat:
    """How one SIB-200 document becomes prompt text (mirrors the `sib200_*` task configs).

    Attributes:
        text_template: the document's prompt; `{text}` is replaced by the sentence.
        target_delimiter: between the prompt and the label (lm-eval's default: a space).
        fewshot_delimiter: between shots (lm-eval's default: a blank line).
    """

    text_template: str = "Topic classification. Sentence: {text}\nTopic:"
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"

    def prompt(self, record: SibRecord) -> str:
        """The prompt text for one record (no label)."""
        return self.text_template.replace("{text}", record.text)

    def shot(self, record: SibRecord) -> str:
        """One solved example for a few-shot context."""
        return self.prompt(record) + self.target_delimiter + record.category


def sib_examples(
    records: Sequence[SibRecord],
    *,
    fmt: PromptFormat,
    max_shots: int,
    seed: int,
    repeats: int = 1,
) -> list[Example]:
    """Every record as a supervised example with 0..`max_shots` other records as context.

    Args:
        records: SIB-200 train records (FLORES devtest sentences already removed).
        fmt: the prompt format of the evaluation task.
        max_shots: the most context shots (the evaluation's k).
        seed: seeds shot counts and shot choice.
        repeats: how many differently-shot copies of each record.

    Returns:
        The examples, in record order.
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(repeats):
        for i, record in enumerate(records):
            others = [r for j, r in enumerate(records) if j != i]
            shots = rng.sample(others, rng.randint(0, min(max_shots, len(others))))
            context = "".join(fmt.shot(s) + fmt.fewshot_delimiter for s in shots)
            examples.append(
                Example(prompt=context + fmt.prompt(record), completion=fmt.target_delimiter + record.category)
            )
    return examples


def instruction_examples(records: Sequence[Instruction]) -> list[Example]:
    """Alpaca records as `### Instruction / ### Input / ### Response` examples.

    Args:
        records: instruction records.

    Returns:
        The examples.
    """
    examples = []
    for r in records:
        body = f"### Instruction:\n{r.instruction}\n\n"
        if r.input.strip():
            body += f"### Input:\n{r.input}\n\n"
        examples.append(Example(prompt=body + "### Response:\n", completion=r.output))
    return examples
