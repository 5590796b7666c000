"""`registry demo`: the bot journey end to end (hub and bot as subprocesses); a second run reuses the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HOME=str(workdir / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "-q", "demo", "--workdir", str(workdir),
           "--lab-steps", "4", "--eval-limit", "2", "--timeout", "240"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480, cwd=workdir.parent)


@pytest.mark.slow
def test_demo_pushes_a_ct_and_prints_the_merged_model_its_table_and_the_comment(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    first = _demo(workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "Merged model: http://127.0.0.1:" in out and "/mergebot/tiny-ct-ben_Beng-tiny-sft-ties-sv" in out
    assert "| metric | CT" in out and "flores_ben_Beng bits_per_byte" in out
    assert "The bot's comment on" in out and "### Merged revision" in out
    assert "Training lab-size" in first.stderr and "Push -> published in" in first.stderr
    second = _demo(workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Training lab-size" not in second.stderr  # the models are reused
    assert "Merged model:" in second.stdout
    assert not any((workdir / "bot" / "staging").iterdir())


def test_keep_running_refuses_a_busy_space_port_before_any_work(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(PYTHONPATH=str(REPO_ROOT), HF_HOME=str(tmp_path / "hf-home"))
        cmd = [sys.executable, "-c", "from registry.cli import main; main()", "demo", "--workdir",
               str(tmp_path / "demo"), "--keep-running", "--space-port", str(port)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert errors == [errors[0]] and f"port {port} is in use" in errors[0] and "--space-port" in errors[0]
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written


@pytest.mark.slow
def test_keep_running_prints_urls_that_answer_and_sigterm_stops_every_child(tmp_path: Path) -> None:
    import signal
    import socket
    import urllib.request

    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HOME=str(workdir / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               GRADIO_ANALYTICS_ENABLED="False")  # fmt: skip
    cmd = [sys.executable, "-c", "from registry.cli import main; main()", "-q", "demo", "--workdir", str(workdir),
           "--lab-steps", "4", "--eval-limit", "2", "--timeout", "240", "--keep-running", "--space-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("Hub: "):
                break
        text = "".join(lines)
        assert f"Space: http://127.0.0.1:{port}" in text, text + (proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:  # printed: it answers
            assert response.status == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # hub, bot, Space
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline()[-6:] for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
