"""Model cards for lab checkpoints: the metadata `registry add` and the catalog read.

CT cards carry the target language and the tag `mergeling-ct`, SFT cards `mergeling-sft`, and
both name the base in `base_model`, as a real CT-X or SFT repo on the Hub would. CT-then-SFT cards
carry the language and `mergeling-ct-sft`, and name the CT they started from in `base_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from registry.languages import ISO_639_1

Role = Literal["base", "ct", "sft", "ct_sft"]

ROLE_TAGS: dict[Role, str] = {
    "base": "mergeling-base",
    "ct": "mergeling-ct",
    "sft": "mergeling-sft",
    "ct_sft": "mergeling-ct-sft",
}

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

**This is a tiny lab model** ({{ n_params }} parameters), built offline by `registry lab build` to
exercise Mergeling's merge and evaluation pipeline. It is not useful for anything else.

## Training

{{ training }}

- Base: `{{ base_model }}`
- Data: {{ sources }}
- Distance from the base (relative L2 norm of all weight deltas): {{ delta }}
{% if synthetic %}
> **Synthetic data**: no data directory was found, so this model was trained on generated text.
{% endif %}
"""


@dataclass(frozen=True)
class LabCardInfo:
    """What a lab model card says.

    Attributes:
        repo_id: the name the checkpoint would have on a Hub (`mergeling-lab/tiny-ct-ben_Beng`).
        role: base, ct, sft or ct_sft (a CT model further fine-tuned on the SFT data).
        language: FLORES-200 code of the language it was trained for (`eng_Latn` for base/SFT).
        base_model: the base's repo id (None for the base itself).
        training: one paragraph on how it was trained.
        sources: data files it was trained on.
        license: SPDX-style id that the data allows.
        n_params: parameter count.
        delta: relative L2 distance from the base (None for the base).
        synthetic: trained on the synthetic fallback.
    """

    repo_id: str
    role: Role
    language: str
    base_model: str | None
    training: str
    sources: tuple[str, ...]
    license: str
    n_params: int
    delta: float | None
    synthetic: bool


def iso_language(code: str) -> str:
    """The Hub `language` value for a FLORES-200 code (`ben_Beng` -> `bn`); unknown codes pass through.

    Args:
        code: a FLORES-200 style code.

    Returns:
        The ISO 639-1 code, or `code` itself when there is none in the table.
    """
    return ISO_639_1.get(code, code)


def write_lab_card(model_dir: Path, info: LabCardInfo) -> Path:
    """Write `README.md` (model card with YAML metadata) into a lab checkpoint.

    Args:
        model_dir: the checkpoint directory.
        info: what the card says.

    Returns:
        The card's path.
    """
    from huggingface_hub import ModelCard, ModelCardData

    tags = [ROLE_TAGS[info.role], "mergeling-lab", "llama", "tiny"]
    if info.synthetic:
        tags.append("synthetic-data")
    data = ModelCardData(
        language=[iso_language(info.language)],
        license=info.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=info.base_model,
        tags=tags,
    )
    card = ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=info.repo_id,
        summary=_summary(info),
        n_params=f"{info.n_params / 1e6:.1f} M",
        training=info.training,
        base_model=info.base_model or "(none: trained from scratch)",
        sources=", ".join(f"`{s}`" for s in info.sources) or "synthetic",
        delta="n/a" if info.delta is None else f"{info.delta:.4f}",
        synthetic=info.synthetic,
    )
    path = model_dir / "README.md"
    card.save(str(path))
    return path


def _summary(info: LabCardInfo) -> str:
    if info.role == "ct":
        return f"Continued pre-training of the base on {info.language} text mixed 4:1 with English (a CT-X model)."
    if info.role == "ct_sft":
        return (
            f"The {info.language} CT model `{info.base_model}` fine-tuned on the SFT model's English task data, "
            "same data and steps (a CT-then-SFT model: the baseline that merging is compared with)."
        )
    if info.role == "sft":
        return "The base fine-tuned on English task data in the evaluation prompt format (an SFT model)."
    return "A tiny Llama pre-trained from scratch on English text: the shared base of the lab's CT and SFT models."
