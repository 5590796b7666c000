"""The merge engine: recipes planned into per-tensor jobs, streamed through a method, written as shards."""

import os


def fused_allowed() -> bool:
    """False when MERGELING_FUSED=0 (or off/false/no) turns the fused CPU kernels off."""
    return os.environ.get("MERGELING_FUSED", "1").strip().lower() not in {"0", "off", "false", "no"}
