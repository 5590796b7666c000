"""The lab's stage marker (`lab_train.json`): written atomically, and a damaged one means retrain."""

from __future__ import annotations

from pathlib import Path

from registry.lab.build import STAGE_RECORD, _finished, _record, _stage
from registry.lab.train import TrainResult


def _result(out: Path) -> TrainResult:
    fields = {name: 0 for name in TrainResult.__dataclass_fields__}
    saved = ((2, 64, str(out / "step2")),)  # an intermediate checkpoint (LabConfig.ct_save_steps)
    return TrainResult(**{**fields, "out_dir": out, "first_loss": 5.0, "last_loss": 3.0, "checkpoints": saved})


def test_marker_round_trips_and_leaves_no_partial_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    written = _record(_result(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [STAGE_RECORD, "model.safetensors"]
    assert _finished(tmp_path) == written


def test_a_damaged_marker_means_retrain(tmp_path: Path) -> None:
    # A marker cut short used to crash --resume with a JSONDecodeError.
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / STAGE_RECORD).write_text('{"steps": 3, "out_d', encoding="utf-8")
    assert _finished(tmp_path) is None
    calls = []

    def train() -> TrainResult:
        calls.append(1)
        return _result(tmp_path)

    assert _stage(tmp_path, resume=True, train=train).out_dir == tmp_path and calls == [1]
    assert _stage(tmp_path, resume=True, train=train).out_dir == tmp_path and calls == [1]  # now finished
