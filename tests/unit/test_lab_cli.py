"""`registry lab build` options: the --quick profile and the time warning (the full build took 22 min unannounced)."""

from __future__ import annotations

from typer.testing import CliRunner

from registry.cli import app
from registry.cli.lab import QUICK_STEPS, stage_steps
from registry.lab.build import LabConfig


def test_quick_profile_is_a_fraction_of_the_default_and_steps_still_override() -> None:
    full = LabConfig()
    quick = LabConfig(**stage_steps(quick=True, steps=None))
    assert quick.base_steps * 4 <= full.base_steps and quick.ct_steps * 4 <= full.ct_steps
    assert (quick.base_steps, quick.ct_steps, quick.sft_steps) == tuple(QUICK_STEPS.values())
    assert stage_steps(quick=True, steps="ct=5") == {**QUICK_STEPS, "ct_steps": 5}
    assert stage_steps(quick=False, steps=None) == {}


def test_help_says_how_long_it_takes() -> None:
    result = CliRunner().invoke(app, ["lab", "build", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "20-25 minutes" in text and "--quick" in text
