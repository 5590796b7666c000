"""Mergeling registry: merge engine, Hub registry of CT/SFT checkpoints, evaluation and the `registry` CLI.

Importing this package does no work: heavy modules (torch, huggingface_hub, lm_eval) are imported
by the functions that need them.
"""

__version__ = "0.1.0"
