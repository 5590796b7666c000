"""requirements/lock.txt is what `make setup` installs: it must hold every dependency pyproject.toml
declares (base, test and ray extras), within its range, with hashes, and the CPU build of torch.
Adding a dependency without `make lock` fails here instead of on a newcomer's machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, Version]:
    text = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, flags=re.M)
    return {canonicalize_name(name): Version(version) for name, version in pins}


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"],
                *project["optional-dependencies"]["ray"]]  # fmt: skip
    locked = _locked()
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements/lock.txt: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"lock.txt pins {requirement.name}=={locked[name]}, outside pyproject's {requirement.specifier}: "
            "run `make lock`"
        )


def test_every_pin_has_a_hash_and_torch_is_the_cpu_build() -> None:
    text = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split("\n", 2)[2])
    assert entries and all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    assert _locked()["torch"] == Version("2.13.0+cpu")
    assert not any(name.startswith("nvidia-") for name in _locked()), "a CUDA build of torch crept into the lock"
    assert "/opt/" not in text and "find-links" not in text  # no machine path committed
