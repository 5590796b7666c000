"""mergekit features Mergeling does not implement are refused by name, with what to write instead."""

from __future__ import annotations

import pytest

from registry.errors import UnsupportedFeatureError
from registry.mergekit_compat import refuse_unsupported

TIES = {
    "merge_method": "ties",
    "base_model": "org/base",
    "models": [{"model": "org/ct", "parameters": {"weight": 1.0, "density": 0.2}}, {"model": "org/sft"}],
    "parameters": {"normalize": True, "int8_mask": True},
    "dtype": "bfloat16",
}


def test_plain_config_passes() -> None:
    refuse_unsupported(TIES, "r.yml")
    # gradients and filter: conditions are implemented (registry.merge.settings)
    refuse_unsupported({**TIES, "parameters": {"density": [{"filter": "mlp", "value": 0.5}, {"value": 0.2}]}}, "r.yml")
    refuse_unsupported({**TIES, "parameters": {"weight": [0.1, 0.9]}}, "r.yml")
    refuse_unsupported({**TIES, "tokenizer_source": "model:org/ct"}, "r.yml")


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"modules": {"text_decoder": {"models": []}}}, "modules"),
        ({"tokenizer": {"source": "union"}}, "tokenizer"),
        ({"chat_template": "chatml"}, "chat_template"),
        ({"tokenizer_source": "union"}, "union"),
        ({"parameters": {"rescale": True}}, "DARE"),
        ({"parameters": {"t": 0.5}}, "SLERP"),
        ({"models": [{"model": "org/ct+org/lora+org/x"}, {"model": "org/sft", "role": "sft"}]}, "LoRA"),
        ({"base_model": "org/base+"}, r"base_model = 'org/base\+': a LoRA reference is model\+lora"),
    ],
)
def test_unsupported_mergekit_features_refused_by_name(change: dict, name: str) -> None:
    with pytest.raises(UnsupportedFeatureError, match=name) as info:
        refuse_unsupported({**TIES, **change}, "r.yml")
    assert str(info.value).startswith("r.yml: ")  # the file, then the field
