"""Mergeling registry: merge engine, Hub registry of CT/SFT checkpoints, evaluation and the `registry` CLI.

Importing this package does no work: heavy modules (torch, huggingface_hub, lm_eval) are imported
by the functions that need them.
"""

import os

__version__ = "0.1.0"

# numba (the fused CPU merge kernels) formats its internal, retried typing errors through colorama,
# whose init()/deinit() swap sys.stdout/sys.stderr process-wide from whichever thread compiles: a
# compile on the kernels' warm-up thread put back a stale stream under a concurrent click CliRunner
# (a CI failure). numba reads this once, at its import, which may come from any module: set here.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
