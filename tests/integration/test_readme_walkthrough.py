"""The README's walkthrough, run exactly as written: its bash blocks, in order, in one shell.

So the README cannot drift from the product again: a researcher's CT pushed to an embedded hub comes
back merged, evaluated and commented by the bot, as `make demo` shows. The blocks run in a scratch
copy of the repository's layout (`recipes/` and `.venv/` linked, `../shared` beside it), so the
walkthrough's `rm -rf .mergeling/walkthrough` never touches the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def walkthrough_blocks(readme: str) -> list[str]:
    """The ```bash blocks of the README's "## Walkthrough" section, in order."""
    section = readme.partition("\n## Walkthrough")[2].partition("\n## ")[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_walkthrough_has_the_whole_journey() -> None:
    script = "\n".join(walkthrough_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8")))
    for step in ("hub token create", "hub serve", "lab build", "add sft", "bot serve", "--only ct", "bot show"):
        assert step in script, f"the README's walkthrough lost `{step}`"


@pytest.mark.slow
@pytest.mark.shared_data
def test_readme_walkthrough_runs_as_written(tmp_path: Path, shared_data: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the walkthrough waits for its servers with curl, which this machine lacks")
    busy = [port for port in (8791, 8792) if not _port_free(port)]
    if busy:
        pytest.skip(f"the walkthrough's ports {busy} are in use on this machine")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("recipes", ".venv"):
        (repo / name).symlink_to(REPO_ROOT / name)
    (tmp_path / "shared").symlink_to(shared_data.parent)
    script = "\n".join(walkthrough_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MERGELING_", "VIRTUAL_ENV"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script], cwd=repo, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=1500)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the hub and the bot, if a block failed before `kill`
        except ProcessLookupError:
            pass
    logs = "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
        for p in (repo / ".mergeling" / "walkthrough").glob("*.log")
    )
    assert proc.returncode == 0, f"{err[-3000:]}{logs}"
    assert "Merged model: http://127.0.0.1:8791/mergebot/" in out, out
    assert "Evaluation (CT vs SFT vs merged):" in out and "flores_ben_Beng bits_per_byte" in out, out
    assert "The bot's comment on http://127.0.0.1:8791/alice/tiny-ct-ben_Beng" in out, out
    assert "published" in out
