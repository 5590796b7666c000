"""`registry demo`: the product's first journey, offline: push a CT checkpoint, get the merged model back.

An embedded hub (`registry hub serve`) over `<workdir>/hub`; lab-size base / SFT / CT-ben models
trained once (cached in `<workdir>/lab`); a researcher (`alice`) pushes the base and the SFT, which
the bot's catalog records; the bot (`registry bot serve`, user `mergebot`) starts as a subprocess
and registers its webhook; alice pushes a new CT revision; the hub delivers the webhook; the demo
waits for the job and prints the merged repo, its evaluation table and the bot's discussion comment.
`registry` never imports `bot` or `space`: both run as subprocesses of the `registry` CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli._state import cli_state, stderr_console
from registry.cli.lab import TINY_PROFILE

RESEARCHER, BOT = "alice", "mergebot"
LANGUAGE = "ben_Beng"
# `registry lab build --tiny`: small enough to train in about a minute on 2 cores, big enough to learn.
LAB_SIZE: dict[str, Any] = {"languages": (LANGUAGE,), "repo_prefix": RESEARCHER, **TINY_PROFILE}
# The quick suites (FLORES bits per byte, SIB-200 0-shot) the README's walkthrough uses too.
QUICK_SUITES = Path(__file__).resolve().parents[2] / "recipes" / "eval" / "quick"


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option(help="Hub data, lab models, the bot's data.")] = Path(".mergeling/demo"),
    eval_limit: Annotated[int, typer.Option(min=1, help="Documents per evaluation task.")] = 20,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the hub and the bot up (and start the Space when installed).")
    ] = False,
    space_port: Annotated[int, typer.Option(help="The Space's port with --keep-running.")] = 7860,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the bot's job.")] = 900,
    lab_steps: Annotated[
        int | None, typer.Option(hidden=True, help="Tests: train every lab model this many steps.")
    ] = None,
) -> None:
    """Push a CT checkpoint to an embedded hub and watch the merge bot merge, evaluate and publish it.

    The lab models are trained once (about 2 minutes on 2 cores) and reused. Evaluation data comes from
    ../shared/data ($MERGELING_SHARED_DATA) when present, else a generated stand-in (labelled as such).

    Examples:

      registry demo

      registry demo --keep-running          (hub, bot and Space stay up; Ctrl-C stops them)
    """
    console = stderr_console()
    started = time.monotonic()
    if keep_running and importlib.util.find_spec("space.cli") is not None:
        from registry.ports import ensure_port_free

        ensure_port_free("127.0.0.1", space_port, service="Space", option="--space-port")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    quiet = not cli_state(ctx).progress
    with ExitStack() as stack:
        stack.enter_context(_unwind_on_signals())
        hub_proc, hub_url = _spawn(
            ["hub", "serve", "--data", str(workdir / "hub"), "--port", "0"], log=workdir / "hub.log", env=os.environ
        )
        stack.callback(_stop, hub_proc)
        _wait_healthy("hub", f"{hub_url}/api/models?limit=1", proc=hub_proc, log=workdir / "hub.log")
        tokens = _tokens(workdir)
        console.print(f"Embedded hub at {hub_url} (data in {workdir / 'hub'})")
        lab = _lab(workdir / "lab", console=console, quiet=quiet, steps=lab_steps)
        from registry.hub import HubClient

        alice = HubClient(endpoint=hub_url, token=tokens[RESEARCHER], cache_dir=workdir / "cache-alice")
        mergebot = HubClient(endpoint=hub_url, token=tokens[BOT], cache_dir=workdir / "cache-bot")
        registry_repo = f"{BOT}/mergeling-registry"
        _prepare_hub(alice, mergebot, lab, registry_repo=registry_repo, console=console)
        suites, data_dir = _eval_inputs(workdir)
        env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_TOKEN": tokens[BOT],
               "MERGELING_WEBHOOK_SECRET": tokens["secret"], "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
        bot_proc, bot_url = _spawn(
            ["bot", "serve", "--registry", registry_repo, "--namespace", BOT, "--watch", RESEARCHER,
             "--data", str(workdir / "bot"), "--port", "0", "--eval-limit", str(eval_limit),
             "--eval-suites", str(suites), "--eval-data-dir", str(data_dir), "--poll", "30"],
            log=workdir / "bot.log", env=env,
        )  # fmt: skip
        stack.callback(_stop, bot_proc)
        _wait_healthy("bot", f"{bot_url}/healthz", proc=bot_proc, log=workdir / "bot.log")
        console.print(f"Merge bot at {bot_url} (log: {workdir / 'bot.log'})")
        _wait_for_webhook(mergebot, bot_url, bot=bot_proc)
        ct = next(c for c in lab["checkpoints"].values() if c["role"] == "ct")
        pushed = time.monotonic()
        sha = _push_ct(alice, workdir / "lab" / _name(lab, "ct"), ct["repo_id"])
        console.print(f"{RESEARCHER} pushed {ct['repo_id']}@{sha[:7]}; waiting for the bot ...")
        job = _wait(bot_url, ct["repo_id"], sha, timeout=timeout, bot=bot_proc)
        took = time.monotonic() - pushed
        _report(job, mergebot, took=took, total=time.monotonic() - started)
        if keep_running:
            _keep_running(stack, hub_url=hub_url, bot_url=bot_url, tokens=tokens, registry_repo=registry_repo,
                          workdir=workdir, port=space_port)  # fmt: skip
        if job["state"] != "published":
            raise typer.Exit(code=1)


# -- processes ----------------------------------------------------------------------------------
def _spawn(args: list[str], *, log: Path, env: Any) -> tuple[subprocess.Popen[str], str]:
    """`registry ARGS` as a subprocess that prints its URL first; returns it and the URL."""
    from registry.errors import RegistryError

    cmd = [sys.executable, "-c", "from registry.cli import main; main()", *args]
    with log.open("a") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(env), preexec_fn=_die_with_parent
        )
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("http"):
        proc.kill()
        tail = log.read_text(errors="replace")[-600:].strip().splitlines()
        raise RegistryError(
            f"`registry {' '.join(args[:2])}` did not start ({tail[-1] if tail else 'no output'}); see {log}"
        )
    return proc, line


@contextmanager
def _unwind_on_signals() -> Iterator[None]:
    """SIGTERM / SIGHUP (`kill`, a closed terminal) unwind like Ctrl-C, so every child is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signums = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the demo dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_healthy(name: str, url: str, *, proc: subprocess.Popen[str], log: Path, timeout: float = 60) -> None:
    """Wait until `url` answers 200; else say which service failed and why (its log's last line)."""
    from registry.errors import RegistryError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a service we started)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    why = (
        f"exited with code {proc.returncode}" if proc.poll() is not None else f"did not answer {url} in {timeout:.0f} s"
    )
    raise RegistryError(f"the {name} {why}: {lines[-1] if lines else 'no output'} (log: {log})")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tokens(workdir: Path) -> dict[str, str]:
    """The demo's tokens (researcher, bot) and webhook secret, created once."""
    from registry.localhub.auth import Accounts

    path = workdir / "tokens.json"
    accounts = Accounts(workdir / "hub")
    if path.is_file():
        known = dict(json.loads(path.read_text()))
        if "password" not in known:  # made by an earlier version of the demo
            known["password"] = secrets.token_urlsafe(9)
            accounts.set_password(RESEARCHER, known["password"])
            path.write_text(json.dumps(known))
        return known
    tokens = {
        RESEARCHER: accounts.create_token(RESEARCHER, write=True, name="demo"),
        BOT: accounts.create_token(BOT, write=True, name="demo-bot"),
        "secret": secrets.token_urlsafe(24),
        "password": secrets.token_urlsafe(9),  # alice signs in to the Space with it (--keep-running)
    }
    accounts.set_password(RESEARCHER, tokens["password"])
    path.write_text(json.dumps(tokens))
    path.chmod(0o600)
    return tokens


# -- models and data ------------------------------------------------------------------------------
def _lab(out: Path, *, console: Any, quiet: bool, steps: int | None = None) -> dict[str, Any]:
    """Build the lab-size models once (kept in `out`)."""
    manifest = out / "lab.json"
    if not manifest.is_file():
        from registry.lab.build import LabConfig, build_lab

        size = dict(LAB_SIZE)
        if steps is not None:
            size.update(base_steps=steps, ct_steps=steps, sft_steps=steps, vocab_size=512)
        data = _shared_data()
        console.print(
            f"Training lab-size base / CT-{LANGUAGE} / SFT models in {out} (once; about 100 s on 2 cores) ..."
        )
        t0 = time.monotonic()
        build_lab(out, config=LabConfig(**size), data_dir=data, resume=True, progress=not quiet)
        console.print(f"Trained in {time.monotonic() - t0:.0f} s{'' if data else ' on generated text'}")
    return dict(json.loads(manifest.read_text()))


def _name(lab: dict[str, Any], role: str) -> str:
    return str(next(name for name, entry in lab["checkpoints"].items() if entry["role"] == role))


def _shared_data() -> Path | None:
    path = Path(os.environ.get("MERGELING_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    return path if (path / "manifest.json").is_file() else None


def _eval_inputs(workdir: Path) -> tuple[Path, Path]:
    """A demo suite (FLORES bits per byte, SIB-200 0-shot) and its data (shared, or generated)."""
    suites = QUICK_SUITES
    shared = _shared_data()
    if shared is not None:
        return suites, shared
    from registry.lab.corpora import synthetic_corpora

    data = workdir / "eval-data"
    corpora = synthetic_corpora(languages=(LANGUAGE,), seed=7)
    texts = corpora.target[LANGUAGE][:40]
    labels = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]
    flores, sib = data / "flores200" / "devtest", data / "sib200" / LANGUAGE
    flores.mkdir(parents=True, exist_ok=True)
    sib.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "lang": LANGUAGE, "text": t[:300]} for i, t in enumerate(texts)]
    (flores / f"{LANGUAGE}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for split in ("train", "dev", "test"):
        sib_rows = [
            {"index_id": i, "lang": LANGUAGE, "category": labels[i % 7], "text": t[:200]} for i, t in enumerate(texts)
        ]
        (sib / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sib_rows))
    (data / "sib200" / "labels.txt").write_text("\n".join(labels) + "\n")
    return suites, data


def _prepare_hub(alice: Any, mergebot: Any, lab: dict[str, Any], *, registry_repo: str, console: Any) -> None:
    """alice's base and SFT on the hub, the SFT in the bot's catalog (skipped when already there)."""
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_sft_entry
    from registry.errors import CatalogError

    root = Path(lab["checkpoints"][_name(lab, "base")]["path"]).parent
    for role in ("base", "sft"):
        entry = lab["checkpoints"][_name(lab, role)]
        if not alice.repo_exists(entry["repo_id"]):
            alice.create_repo(entry["repo_id"], exist_ok=True)
            alice.upload_folder(root / _name(lab, role), entry["repo_id"], message=f"Upload lab {role}")
            console.print(f"{RESEARCHER} pushed {entry['repo_id']}")
    sft = lab["checkpoints"][_name(lab, "sft")]["repo_id"]
    base = lab["checkpoints"][_name(lab, "base")]["repo_id"]
    store = CatalogStore(hub=mergebot, repo_id=registry_repo)
    try:
        store.add(build_sft_entry(mergebot, repo=sft, revision=None, base=base, data="lab"))
        console.print(f"Recorded {sft} in the catalog {registry_repo}")
    except CatalogError as exc:
        if "already in registry" not in str(exc):
            raise


def _push_ct(alice: Any, folder: Path, repo: str) -> str:
    """Push the CT as a new revision (its card notes the push time, so every run is a new commit)."""
    readme = (folder / "README.md").read_text(encoding="utf-8")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    alice.create_repo(repo, exist_ok=True)
    add: dict[str, bytes | Path] = {
        p.relative_to(folder).as_posix(): p for p in sorted(folder.iterdir()) if p.is_file() and p.name != "README.md"
    }
    add["README.md"] = f"{readme.rstrip()}\n\nPushed by `registry demo` at {stamp}.\n".encode()
    return str(alice.commit_files(repo, message="New CT revision", add=add))


# -- waiting and reporting ----------------------------------------------------------------------------
def _wait_for_webhook(hub: Any, bot_url: str, *, bot: subprocess.Popen[str], timeout: float = 60) -> None:
    """The bot prints its URL first and registers its webhook next: push only once it is there."""
    from registry.errors import RegistryError

    target = f"{bot_url}/webhooks/hub"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and bot.poll() is None:
        if any(hook.url == target for hook in hub.list_webhooks()):
            return
        time.sleep(0.2)
    raise RegistryError(f"the bot registered no webhook within {timeout:.0f} s; see its log")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (the bot we started)
        return json.loads(response.read())


def _wait(bot_url: str, repo: str, sha: str, *, timeout: float, bot: subprocess.Popen[str]) -> dict[str, Any]:
    from registry.errors import RegistryError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bot.poll() is not None:
            raise RegistryError("the bot exited; see .mergeling/demo/bot.log")
        try:
            listed = _get(f"{bot_url}/jobs")
        except OSError:  # starting up
            time.sleep(0.5)
            continue
        jobs = [j for j in listed if j["ct_repo"] == repo and j["ct_sha"] == sha]
        final = [j for j in jobs if j["state"] in ("published", "failed", "cancelled")]
        if final and all(j["state"] in ("published", "failed", "cancelled", "superseded") for j in jobs):
            return dict(final[0])
        time.sleep(1)
    raise RegistryError(f"the bot did not finish within {timeout:.0f} s; `registry bot status` shows where it is")


def _report(job: dict[str, Any], hub: Any, *, took: float, total: float) -> None:
    from registry.cli.jobreport import print_job_report

    if not print_job_report(job, hub):
        return
    split = ", ".join(
        f"{step} {value:.1f} s" for step, value in (job.get("seconds") or {}).items() if value is not None
    )
    stderr_console().print(f"Push -> published in {took:.0f} s ({split}); whole demo {total:.0f} s")


def _sign_in_env(hub_dir: Path, *, hub_url: str, port: int) -> dict[str, str]:
    """The variables Gradio's "Sign in with HF" reads on a Space, pointed at the embedded hub's OpenID
    provider (an OAuth app registered for this Space's callback URL, once per port)."""
    path = hub_dir.parent / f"oauth-app-{port}.json"
    if path.is_file():
        app = dict(json.loads(path.read_text()))
    else:
        from registry.localhub.auth import Accounts

        client_id, secret = Accounts(hub_dir).create_oauth_app(
            "Mergeling Space (demo)",
            redirect_uris=[f"http://127.0.0.1:{port}/login/callback"],
            scopes=["openid", "profile", "read-repos"],
        )
        app = {"OAUTH_CLIENT_ID": client_id, "OAUTH_CLIENT_SECRET": secret}
        path.write_text(json.dumps(app))
        path.chmod(0o600)
    # SYSTEM/SPACE_ID: Gradio installs its real OAuth routes only "on a Space" (else a mocked login).
    return {**app, "OPENID_PROVIDER_URL": hub_url, "OAUTH_SCOPES": "openid profile read-repos",
            "SYSTEM": "spaces", "SPACE_ID": f"{RESEARCHER}/mergeling-demo"}  # fmt: skip


def _keep_running(
    stack: ExitStack,
    *,
    hub_url: str,
    bot_url: str,
    tokens: dict[str, str],
    registry_repo: str,
    workdir: Path,
    port: int,
) -> None:
    console = stderr_console()
    if importlib.util.find_spec("space.cli") is not None:
        env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_TOKEN": tokens[RESEARCHER],
               **_sign_in_env(workdir / "hub", hub_url=hub_url, port=port)}  # fmt: skip
        cmd = [sys.executable, "-c", "from registry.cli import main; main()", "space", "--registry", registry_repo,
               "--bot", bot_url, "--port", str(port)]  # fmt: skip
        log_path = workdir / "space.log"
        with log_path.open("a") as log:
            space = subprocess.Popen(cmd, stdout=log, stderr=log, text=True, env=env, preexec_fn=_die_with_parent)
        stack.callback(_stop, space)
        _wait_healthy("Space", f"http://127.0.0.1:{port}/", proc=space, log=log_path, timeout=120)
        typer.echo(f"Space: http://127.0.0.1:{port} (log: {log_path})")
    typer.echo(f"Hub: {hub_url}   Bot: {bot_url}/jobs")
    if tokens.get("password"):
        typer.echo(f"Sign in to the Space as {RESEARCHER} with the password {tokens['password']}")
    typer.echo(f"export HF_ENDPOINT={hub_url} HF_TOKEN={tokens[RESEARCHER]}   # act as {RESEARCHER}")
    console.print("Running; Ctrl-C stops everything.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("Stopping.")
