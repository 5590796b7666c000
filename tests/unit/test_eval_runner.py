"""Pure parts of the runner: device choice and reading lm-eval's output."""

from __future__ import annotations

import pytest

from registry.errors import EvaluationError
from registry.evaluate.bars import harness_progress
from registry.evaluate.runner import parse_task_results, resolve_device


def test_resolve_device() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EvaluationError, match="no CUDA GPU.*; use --device cpu or auto"):
            resolve_device("cuda")


def test_parse_task_results() -> None:
    raw = {
        "results": {
            "t": {
                "alias": "t",
                "acc,none": 0.5,
                "acc_stderr,none": 0.1,
                "bits_per_byte,none": 2.5,
                "bits_per_byte_stderr,none": "N/A",
                "sample_len": 4,
            }
        },
        "higher_is_better": {"t": {"acc": True, "bits_per_byte": False}},
        "n-samples": {"t": {"original": 10, "effective": 4}},
    }
    metrics, n, total = parse_task_results(raw, "t")
    assert (n, total) == (4, 10)
    assert metrics["acc"].value == 0.5 and metrics["acc"].stderr == 0.1 and metrics["acc"].higher_is_better
    assert metrics["bits_per_byte"].stderr is None and not metrics["bits_per_byte"].higher_is_better
    assert set(metrics) == {"acc", "bits_per_byte"}
    with pytest.raises(EvaluationError, match="no results for task u"):
        parse_task_results(raw, "u")


def test_harness_progress_hides_lm_eval_bars_and_restores_them() -> None:
    import io

    import datasets
    import lm_eval.models.huggingface as hf_module
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    datasets.enable_progress_bars()
    transformers_bars = hf_logging.is_progress_bar_enabled()  # off under conftest's env
    out = io.StringIO()
    with harness_progress(enabled=False):
        # lm-eval's model code passes disable=False explicitly; the bar must stay off anyway
        assert list(hf_module.tqdm(range(3), disable=False, file=out, desc="requests")) == [0, 1, 2]
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        assert hub_utils.are_progress_bars_disabled()
    assert out.getvalue() == ""
    assert hf_logging.is_progress_bar_enabled() == transformers_bars and datasets.is_progress_bar_enabled()
    wrapped = hf_module.tqdm
    with harness_progress(enabled=True):
        assert hf_module.tqdm is wrapped  # bound once, never rebound per block
        list(hf_module.tqdm(range(3), file=out, desc="requests"))
    assert "requests" in out.getvalue()


def test_harness_progress_is_scoped_to_its_thread() -> None:
    # The bot and the Space evaluate in threads: one thread's quiet block used to rebind lm-eval's
    # `tqdm` for every thread, and overlapping blocks could restore the wrong one.
    import io
    import threading

    import datasets
    import lm_eval.api.task as task_module

    datasets.enable_progress_bars()
    inside, release, done = threading.Event(), threading.Event(), threading.Event()

    def quiet_worker() -> None:
        with harness_progress(enabled=False):
            inside.set()
            release.wait(10)
        done.set()

    worker = threading.Thread(target=quiet_worker)
    worker.start()
    assert inside.wait(10)
    out = io.StringIO()
    with harness_progress(enabled=True):
        list(task_module.tqdm(range(3), file=out, desc="other-thread"))
    assert "other-thread" in out.getvalue()  # this thread's bars stay on
    with harness_progress(enabled=False):  # overlapping quiet blocks
        release.set()
        assert done.wait(10)
        assert not datasets.is_progress_bar_enabled()  # still off: this block has not left
    worker.join()
    assert datasets.is_progress_bar_enabled()  # the last block to leave restored it


def test_the_task_sets_the_generation_limit_not_the_checkpoint(tiny_family, tmp_path) -> None:
    # A lab checkpoint's generation_config.json says max_new_tokens=64, which won over MGSM's
    # max_gen_toks=256 (lm-eval passes that as max_length) and cut its answers short.
    import shutil

    import torch

    from registry.evaluate.runner import load_lm
    from registry.lab.train import save_generation_config

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_family.base, model_dir)
    save_generation_config(model_dir)
    lm = load_lm(model_dir, device="cpu", batch_size=1)
    assert lm.model.generation_config.max_new_tokens is None
    context = torch.tensor([[1, 5, 6, 7]])
    lm.model.generation_config.eos_token_id = None  # a random tiny model may emit EOS early
    out = lm._model_generate(context, max_length=context.shape[1] + 80, stop=[], do_sample=False)
    assert out.shape[1] == context.shape[1] + 80
