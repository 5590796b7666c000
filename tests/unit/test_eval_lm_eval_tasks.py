"""`registry eval` accepts lm-eval's own task names: they resolve to lm-eval's installed task configs.

No Hub dataset can be downloaded here, so the tests check the resolution and that running one
offline stops with one line saying what it needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.errors import EvaluationError
from registry.evaluate.tasks import find_task, lm_eval_task, task_hash

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "recipes" / "tasks"


def test_lm_eval_names_resolve_to_lm_evals_configs() -> None:
    import lm_eval

    package = Path(lm_eval.__file__).parent / "tasks"
    mgsm = find_task("mgsm_native_cot_bn", tasks_dir=TASKS)  # no config of ours by that name
    assert mgsm.lm_eval and mgsm.path == package / "mgsm" / "native_cot" / "mgsm_native_cot_bn.yaml"
    assert mgsm.config["dataset_path"] == "juletxara/mgsm" and mgsm.config["dataset_name"] == "bn"
    assert mgsm.data_files() == {} and not mgsm.uses_local_data()
    ours = find_task("belebele_ben_Beng", tasks_dir=TASKS)  # ours wins the name ...
    assert not ours.lm_eval and ours.path == TASKS / "belebele_ben_Beng.yaml"
    theirs = find_task("lm_eval:belebele_ben_Beng", tasks_dir=TASKS)  # ... unless lm_eval: asks for theirs
    assert theirs.lm_eval and theirs.path == package / "belebele" / "belebele_ben_Beng.yaml"
    assert theirs.config["dataset_path"] == "facebook/belebele" and theirs.config["dataset_name"] == "ben_Beng"
    assert ours.config["doc_to_text"] == theirs.config["doc_to_text"]
    assert task_hash(theirs, data_dir=None) != task_hash(ours, data_dir=None)
    assert len(task_hash(mgsm, data_dir=None)) == 64


def test_unknown_names_say_where_to_look() -> None:
    with pytest.raises(
        EvaluationError, match=r"lm-eval has no task 'belebele_ben_Bengx' \(did you mean belebele_ben_Beng"
    ):
        lm_eval_task("belebele_ben_Bengx")
    with pytest.raises(EvaluationError, match="lm-eval has no task 'mmlu'"):  # a group, not a task
        lm_eval_task("mmlu")
    with pytest.raises(
        EvaluationError, match=r"Unknown task 'no_such_task_x'.*ours: .*sib200_ben_Beng.*lm-eval ls tasks"
    ):
        find_task("no_such_task_x", tasks_dir=TASKS)


def test_an_lm_eval_task_offline_stops_with_one_line(
    tiny_family, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = CliRunner().invoke(
        app,
        ["-q", "eval", str(tiny_family.base), "--suite", str(ROOT / "recipes" / "eval" / "ben_Beng.yaml"),
         "--task", "mgsm_native_cot_bn", "--data-dir", str(shared_data), "--device", "cpu", "--limit", "2",
         "--no-cache", "--output", str(tmp_path / "out.json")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: lm-eval task mgsm_native_cot_bn reads the Hub dataset juletxara/mgsm")
    assert "huggingface.co is reachable" in message and len(message.splitlines()) <= 3  # one line, wrapped
    assert not (tmp_path / "out.json").exists()
