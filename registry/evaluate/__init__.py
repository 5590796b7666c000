"""Target-language evaluation on lm-evaluation-harness.

Modules, one capability each:
- `tasks`: our lm-eval task configs in `recipes/tasks/` (YAML with `include`, `!function`, `$DATA_DIR`).
- `suite`: evaluation suites in `recipes/eval/<lang>.yaml` (tasks, shots, limits per language).
- `sources`: where models and data come from (local paths, or Hub repos) and their identity hashes.
- `runner`: runs a suite on one model with lm-eval's `HFLM`, one task at a time, through the cache.
- `records`: the pydantic results record (JSON), `cache`: results cached by (model, task, limit).
- `compare`: one table (models x metrics) with differences to the first model.
- `model_index`: results as `huggingface_hub.EvalResult`s for model cards.
- `mgsm`, `metrics`: MGSM answer extraction and bits per byte (pure functions).

Importing this package does no work: lm_eval, torch and transformers load inside functions.
"""
