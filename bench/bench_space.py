"""Benchmark: the Space's page load, first-token latency and tokens/s of a lab-size model on CPU.

Builds a random model of the lab's shape (Llama, hidden 128, 4 layers, 4 heads, MLP 384, 8192-id
vocabulary: 2.95 M parameters), pushes it to an embedded hub with a one-entry catalog, launches the
Space on 127.0.0.1 and measures, against a peer measured in the same run:

- page load: `GET /` and `GET /config` over HTTP, and (when Debian's chromium is installed) a real
  browser until the status line shows the registry;
- first token: the Space's streamed generation (library call, and through `gradio_client` on the
  `/generate` endpoint) against plain `transformers` `model.generate(max_new_tokens=1)` (the peer);
- tokens/s over 64 new tokens, streamed, against plain `model.generate` (the peer).

Target: first token <= 1 s on CPU. Nothing here is imported by the product.

    PYTHONPATH=. .venv/bin/python bench/bench_space.py            # ~1 min on 2 cores
    PYTHONPATH=. .venv/bin/python bench/bench_space.py --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _paired(ours: Callable[[], Any], peer: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Medians of `ours` and `peer`, run alternately (a shared machine's load hits both alike)."""
    a, b = [], []
    for _ in range(runs):
        a.append(_median_time(ours, 1))
        b.append(_median_time(peer, 1))
    return statistics.median(a), statistics.median(b)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _setup(root: Path) -> tuple[Any, str, str, Path]:
    """An embedded hub holding the lab-size model and a catalog with it as a CT entry."""
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_ct_entry
    from registry.hub import HubClient
    from registry.lab.tiny import build_tiny_llama
    from registry.localhub import EmbeddedHub
    from registry.localhub.auth import Accounts

    model = build_tiny_llama(
        root / "lab-model", seed=0, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
        num_kv_heads=4, vocab_size=8192,
    )  # fmt: skip
    token = Accounts(root / "hub").create_token("bench", write=True)
    server = EmbeddedHub.start(root / "hub")
    client = HubClient(endpoint=server.url, token=token, cache_dir=root / "cache")
    client.create_repo("bench/lab-model", exist_ok=True)
    client.upload_folder(model, "bench/lab-model")
    entry = build_ct_entry(client, repo="bench/lab-model", revision=None, language="ben_Beng", base="bench/lab-model")
    CatalogStore(hub=client, repo_id="bench/mergeling-registry").add(entry)
    return server, server.url, token, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each measurement (median reported)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated for the tokens/s figure")
    args = parser.parse_args()

    import os

    import httpx
    import torch
    from gradio_client import Client
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from space.app import build_app
    from space.config import SpaceConfig
    from space.services import SpaceServices

    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-space-"))
    server = demo = None
    try:
        server, url, token, model_dir = _setup(root)
        config = SpaceConfig(endpoint=url, token=token, registry="bench/mergeling-registry", device="cpu")
        services = SpaceServices(config)
        demo = build_app(services=services)
        _, app_url, _ = demo.launch(
            prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True
        )
        app_url = app_url.rstrip("/")
        prompt, n = "Topic classification. Sentence: The river rose after the rain.\nTopic:", args.new_tokens
        model_id = "bench/lab-model"

        # -- page load -------------------------------------------------------------------------
        http_page = _median_time(lambda: httpx.get(app_url, timeout=60).raise_for_status(), args.runs)
        http_config = _median_time(lambda: httpx.get(f"{app_url}/config", timeout=60).raise_for_status(), args.runs)
        browser = _browser_load(app_url, args.runs)

        # -- first token and tokens/s: the Space vs plain transformers ---------------------------
        started = time.perf_counter()
        next(services.generate(model_id, prompt, 1))
        cold = time.perf_counter() - started  # check + download + load + first token

        def first_token() -> None:
            next(services.generate(model_id, prompt, n))

        def streamed() -> None:
            for _ in services.generate(model_id, prompt, n):
                pass

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        peer = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        ids = tokenizer(prompt, return_tensors="pt").input_ids

        def peer_generate(k: int) -> None:
            with torch.inference_mode():
                peer.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, do_sample=False, pad_token_id=0
                )

        space_first, peer_first = _paired(first_token, lambda: peer_generate(1), args.runs)
        # Greedy on the same weights: the Space generates the same tokens as the peer, so the same count.
        with torch.inference_mode():
            out = peer.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0
            )
        generated = int(out.shape[1] - ids.shape[1])
        space_stream, peer_stream = _paired(streamed, lambda: peer_generate(generated), args.runs)

        client = Client(app_url, verbose=False)

        def api_first_token() -> None:
            job = client.submit(model_id, prompt, n, api_name="/generate")
            while not job.outputs() and not job.done():
                time.sleep(0.002)
            job.result(timeout=120)

        api_first = _median_time(api_first_token, max(1, args.runs // 2))
        board_cold, board_warm = _leaderboard_200(server.url, token, root)
        rss_before, rss_peak, rss_after = _megabyte_prompts(client, model_id)
        api_full = _median_time(
            lambda: client.predict(model_id, prompt, n, api_name="/generate"), max(1, args.runs // 2)
        )
    finally:
        if demo is not None:
            demo.close()
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    load_after = os.getloadavg()
    params = sum(p.numel() for p in peer.parameters())
    print(
        f"Machine load (1/5/15 min, {os.cpu_count()} cores): before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    print(f"Lab-size model: {params / 1e6:.2f} M parameters, CPU, torch threads {torch.get_num_threads()}")
    print(f"{'measure':48s} {'Space':>10s} {'peer':>10s} {'ratio':>7s}")
    print(f"{'page: GET / (s)':48s} {http_page:10.3f}")
    print(f"{'page: GET /config (s)':48s} {http_config:10.3f}")
    if browser is not None:
        print(f"{'page: chromium until the status line shows (s)':48s} {browser:10.3f}")
    print(f"{'first use: check + download + load + 1 token (s)':48s} {cold:10.3f}")
    print(
        f"{'first token, library, warm (s)':48s} {space_first:10.3f} {peer_first:10.3f} {space_first / peer_first:7.2f}"
    )
    print(
        f"{'first token via gradio_client /generate (s)':48s} {api_first:10.3f} {peer_first:10.3f} {api_first / peer_first:7.2f}"
    )
    tokens_label = f"tokens/s, {generated} new tokens, streamed (library)"
    api_label = f"{generated} new tokens via gradio_client /generate (s)"
    space_rate, peer_rate = generated / space_stream, generated / peer_stream
    print(f"{tokens_label:48s} {space_rate:10.1f} {peer_rate:10.1f} {space_rate / peer_rate:7.2f}")
    print(f"{api_label:48s} {api_full:10.3f} {peer_stream:10.3f} {api_full / peer_stream:7.2f}")
    print("(peer: plain transformers generate on the same weights, same greedy tokens, no streaming)")
    print(f"{'leaderboard, 200 merges: first load (s)':48s} {board_cold:10.3f}")
    print(f"{'leaderboard, 200 merges: again, cached (s)':48s} {board_warm:10.3f}")
    print(
        f"{'RSS under 20 concurrent 1 MB prompts (MB)':48s} before {rss_before / 1e6:.0f}, "
        f"peak {rss_peak / 1e6:.0f}, after {rss_after / 1e6:.0f}"
    )
    verdict = "met" if max(space_first, api_first) <= 1.0 else "MISSED"
    print(f"Target first token <= 1 s on CPU: {verdict} (library {space_first:.3f} s, API {api_first:.3f} s)")


def _leaderboard_200(url: str, token: str, root: Path) -> tuple[float, float]:
    """The /leaderboard endpoint of a fresh Space over a catalog of 200 published merges (each output
    repo real and public, so the visitor can see it): (first load, a second load) in seconds."""
    from gradio_client import Client

    from registry.catalog.entries import EvalResult, MergeEntry, MergeInput, merge_entry_id
    from registry.catalog.store import CatalogStore
    from registry.hub import HubClient
    from space.app import build_app
    from space.config import SpaceConfig
    from space.services import SpaceServices

    client = HubClient(endpoint=url, token=token, cache_dir=root / "cache")
    ct_sha = client.head_sha("bench/lab-model") or ""
    entries = []
    folder = root / "card"
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text("---\nlanguage: [bn]\n---\n# a merge\n")
    for i in range(200):
        repo = f"bench/merge-{i:03d}"
        client.create_repo(repo, exist_ok=True)
        sha = str(client.upload_folder(folder, repo))
        recipe_hash = f"{i:064x}"
        entries.append(
            MergeEntry(
                id=merge_entry_id(output_repo=repo, recipe_hash=recipe_hash),
                method=("ties", "ties_sv")[i % 2],
                recipe_hash=recipe_hash,
                inputs=(
                    MergeInput(role="ct", repo="bench/lab-model", revision=ct_sha),
                    MergeInput(role="sft", repo="bench/lab-model", revision=ct_sha),
                ),
                output_repo=repo,
                output_revision=sha,
                status="published",
                languages=("ben_Beng",),
                results=(
                    EvalResult(task="flores_ben_Beng", metric="bits_per_byte", value=2 + i / 100),
                    EvalResult(task="sib200_eng_Latn", metric="acc", value=0.3 + i / 1000),
                ),
            )  # fmt: skip
        )
    CatalogStore(hub=client, repo_id="bench/registry-200").add_many(entries)
    config = SpaceConfig(endpoint=url, token=token, registry="bench/registry-200", device="cpu")
    demo = build_app(services=SpaceServices(config, hub=client))
    try:
        _, app_url, _ = demo.launch(
            prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True
        )
        api = Client(app_url, verbose=False)
        started = time.perf_counter()
        rows = api.predict("ben_Beng", api_name="/leaderboard")
        cold = time.perf_counter() - started
        assert len(rows) >= 200, len(rows)
        started = time.perf_counter()
        api.predict("ben_Beng", api_name="/leaderboard")
        return cold, time.perf_counter() - started
    finally:
        demo.close()


def _megabyte_prompts(client: Any, model_id: str) -> tuple[int, int, int]:
    """RSS of this process (the Space runs in it) before, at the peak of, and after 20 concurrent
    /generate calls with 1 MB prompts (each refused by its length)."""
    import gc
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    me = psutil.Process()
    gc.collect()
    before = peak = me.memory_info().rss
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    prompt = "আ" * (1_000_000 // 3)

    def one(i: int) -> None:
        try:
            client.predict(model_id, prompt + str(i), 8, api_name="/generate")
        except Exception:  # noqa: BLE001 (refused: that is the point)
            pass

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(one, range(20)))
    done.set()
    watcher.join()
    gc.collect()
    return before, peak, me.memory_info().rss


def _browser_load(url: str, runs: int) -> float | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import expect, sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"],
        )  # fmt: skip
        try:
            for _ in range(runs):
                page = browser.new_page()
                started = time.perf_counter()
                page.goto(url)
                expect(page.locator("#status")).to_contain_text("registry", timeout=60_000)
                times.append(time.perf_counter() - started)
                page.close()
        finally:
            browser.close()
    return statistics.median(times)


if __name__ == "__main__":
    main()
