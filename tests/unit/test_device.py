"""The one `resolve_device`: names checked, `auto` resolved, the caller's error class raised."""

from __future__ import annotations

import pytest
import torch

from registry.device import resolve_device
from registry.errors import EvaluationError, MergeError, RegistryError


def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("error", [MergeError, EvaluationError, RegistryError])
@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_resolve_device_refuses_unknown_names_with_the_callers_error(error: type[RegistryError], name: str) -> None:
    with pytest.raises(error, match="write auto, cpu, cuda or cuda:N"):
        resolve_device(name, error=error)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_resolve_device_cuda_without_a_gpu() -> None:
    with pytest.raises(MergeError, match=r"no CUDA device is available .*use --device cpu or auto"):
        resolve_device("cuda:0", error=MergeError)
