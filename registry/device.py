"""Where a merge or an evaluation runs: one `Device` choice for the CLI and one `resolve_device`."""

from __future__ import annotations

from enum import StrEnum

from registry.errors import RegistryError


class Device(StrEnum):
    """`--device` choices; `cuda:N` is accepted by `resolve_device` but not offered."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(device: str, *, error: type[RegistryError] = RegistryError) -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu`; `cpu`, `cuda`, `cuda:N` unchanged.

    Args:
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        error: the error class to raise (the caller's: `MergeError`, `EvaluationError`).

    Raises:
        error: an unknown device name, or CUDA asked for and torch sees none.
    """
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise error(f"--device {device!r}: write auto, cpu, cuda or cuda:N", device=device)
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise error(
            f"--device {device}: no CUDA device is available (torch sees no CUDA GPU); use --device cpu or auto",
            device=device,
        )
    return device
