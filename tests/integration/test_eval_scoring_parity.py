"""The runner's batched model (`FastLM`) gives the same task metrics as lm-eval's stock HFLM on
the lab suite's three task types, through `run_task` on the real data (limited runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.evaluate.tasks import find_task

TASKS = Path(__file__).resolve().parents[2] / "recipes" / "tasks"


@pytest.mark.parametrize(
    ("task", "shots", "limit"),
    [
        ("sib200_ben_Beng", 5, 4),
        ("flores_ben_Beng", 0, 6),
        ("belebele_eng_Latn", 0, 4),
        pytest.param("mgsm_ben_Beng", 8, 2, marks=pytest.mark.slow),  # 2 x 256 tokens, twice
    ],
)
def test_fastlm_metrics_equal_hflm(shared_data: Path, tiny_family, task: str, shots: int, limit: int) -> None:
    from lm_eval.models.huggingface import HFLM

    from registry.evaluate.runner import PlannedTask, load_lm, run_task

    planned = PlannedTask(spec=find_task(task, tasks_dir=TASKS), num_fewshot=shots, limit=limit, task_hash="test")
    fast = load_lm(tiny_family.sft, device="cpu")
    stock = HFLM(pretrained=fast.model, tokenizer=fast.tokenizer, batch_size=4)
    got = run_task(fast, planned, data_dir=shared_data, progress=False)
    want = run_task(stock, planned, data_dir=shared_data, progress=False)
    assert got.n_samples == want.n_samples == limit
    assert set(got.metrics) == set(want.metrics)
    for name, value in want.metrics.items():
        assert got.metrics[name].value == pytest.approx(value.value, rel=1e-5, abs=1e-6), name
