"""The Space end to end: a real embedded hub with tiny models and a catalog, the app launched on
127.0.0.1, every named endpoint called through `gradio_client`, bad inputs, the CLI, and a real
browser (Playwright driving Debian's chromium; skipped when chromium is absent).

One hub, one catalog and one app per module (building them is the slow part).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registry.lab.tiny import DemoFamily
from tests._fixtures.hub import REPO_ROOT, HubHandle

REGISTRY = "alice/mergeling-registry"
LANG = "ben_Beng"
# Eval numbers written into the cards' model-index (and the merge entry): the lab's fractions are
# language (7.0 - 3.0) / (7.0 - 1.3) = 0.7018 and task (0.34 - 0.20) / (0.38 - 0.20) = 0.7778.
CT_SCORES = {"flores_ben_Beng": ("bits_per_byte", 1.3), "sib200_eng_Latn": ("acc", 0.20)}
SFT_SCORES = {"flores_ben_Beng": ("bits_per_byte", 7.0), "sib200_eng_Latn": ("acc", 0.38)}
MERGE_SCORES = {"flores_ben_Beng": ("bits_per_byte", 3.0), "sib200_eng_Latn": ("acc", 0.34)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _card(*, language: str | None, base: str | None, scores: dict[str, tuple[str, float]], name: str) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type="text-generation",
            task_name=f"{task} (0-shot)",
            dataset_type="mergeling/eval",
            dataset_name=task,
            dataset_config=task.split("_", 1)[1],
            metric_type=metric,
            metric_value=value,
        )
        for task, (metric, value) in scores.items()
    ]
    data = ModelCardData(
        language=[language] if language else None,
        base_model=base,
        model_name=name,
        eval_results=results or None,
        library_name="transformers",
    )
    return f"---\n{data.to_yaml()}\n---\n\n# {name}\n"


def _push(hub: HubHandle, src: Path, repo: str, tmp: Path, *, readme: str | None = None, private: bool = False,
          token: str | None = None) -> str:  # fmt: skip
    folder = tmp / repo.replace("/", "--")
    shutil.copytree(src, folder)
    if readme is not None:
        (folder / "README.md").write_text(readme, encoding="utf-8")
    client = hub.client(token)
    client.create_repo(repo, private=private, exist_ok=True)
    return str(client.upload_folder(folder, repo))


class StandInBot:
    """A tiny real HTTP server implementing the contract's `POST /jobs`, `GET /jobs[?mine=true]`, `GET /jobs/{id}`.

    It stands in for the bot process, which lives outside `space` (the Space only talks to it over HTTP).
    Where the bot asks the Hub whose token it is, this one takes the token itself as the submitter.
    """

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.jobs: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

        async def post_jobs(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append({"auth": request.headers.get("authorization"), "body": body})
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return JSONResponse({"error": "no token"}, status_code=401)
            now = "2026-11-27T18:00:00Z"
            job_id = f"job-{len(self.jobs) + 1}"
            job = {
                "id": job_id, "state": "queued", "kind": "pair", "language": body.get("language"),
                "ct_repo": body["ct_repo"], "ct_sha": None, "sft_repo": "alice/tiny-sft", "sft_sha": None,
                "output_repo": None, "error": None, "attempts": 0, "created_at": now, "updated_at": now,
                "submitted_by": request.headers["authorization"].removeprefix("Bearer "),
                "links": {"output": None, "discussion": f"{self.url}/discussions/{job_id}",
                          "job": f"{self.url}/jobs/{job_id}"},
            }  # fmt: skip
            self.jobs.insert(0, job)
            return JSONResponse({"jobs": [job]}, status_code=202)

        async def list_jobs(request: Request) -> JSONResponse:
            jobs = self.jobs
            if request.query_params.get("mine") == "true":
                token = request.headers.get("authorization", "").removeprefix("Bearer ")
                if not token:
                    return JSONResponse({"error": "mine=true needs a token"}, status_code=401)
                jobs = [j for j in jobs if j.get("submitted_by") == token]
            return JSONResponse(jobs[: int(request.query_params.get("limit", 50))])

        async def get_job(request: Request) -> JSONResponse:
            for job in self.jobs:
                if job["id"] == request.path_params["id"]:
                    return JSONResponse(job)
            return JSONResponse({"error": f"no job {request.path_params['id']}"}, status_code=404)

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True, "queued": len(self.jobs), "running": 0})

        self.app = Starlette(
            routes=[
                Route("/jobs", post_jobs, methods=["POST"]),
                Route("/jobs", list_jobs, methods=["GET"]),
                Route("/jobs/{id}", get_job, methods=["GET"]),
                Route("/healthz", health, methods=["GET"]),
            ]
        )
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> StandInBot:
        import uvicorn

        port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            assert self.thread is not None
            self.thread.join(timeout=10)


@dataclass
class World:
    hub: HubHandle
    family: DemoFamily
    merged_dir: Path
    ct_id: str
    sft_id: str
    bot: StandInBot
    services: Any
    url: str
    client: Any


def _build_catalog(hub: HubHandle, family: DemoFamily, tmp: Path) -> tuple[str, str, Path]:
    from registry.catalog.entries import EvalResult, MergeEntry, MergeInput, merge_entry_id
    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_ct_entry, build_sft_entry
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    _push(hub, family.base, "alice/tiny-base", tmp)
    _push(hub, family.ct, "alice/tiny-ct-ben", tmp,
          readme=_card(language="bn", base="alice/tiny-base", scores=CT_SCORES, name="tiny-ct-ben"))  # fmt: skip
    _push(hub, family.sft, "alice/tiny-sft", tmp,
          readme=_card(language="en", base="alice/tiny-base", scores=SFT_SCORES, name="tiny-sft"))  # fmt: skip
    recipe = parse_recipe(
        {
            "merge_method": "ties_sv", "base_model": str(family.base), "tokenizer_source": "ct",
            "models": [
                {"model": str(family.ct), "role": "ct", "language": LANG, "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": str(family.sft), "role": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
            ],
            "parameters": {"slack": 0.3},
        }
    )  # fmt: skip
    merged = run_merge(plan_merge(recipe), out=tmp / "merged", device="cpu", progress=False).out
    (merged / "README.md").unlink(missing_ok=True)
    merged_sha = _push(hub, merged, "alice/tiny-merge-ben", tmp,
                       readme=_card(language="bn", base=None, scores=MERGE_SCORES, name="tiny-merge-ben"))  # fmt: skip
    client = hub.client()
    store = CatalogStore(hub=client, repo_id=REGISTRY)
    ct = build_ct_entry(client, repo="alice/tiny-ct-ben", revision=None, language=LANG, base="alice/tiny-base")
    sft = build_sft_entry(client, repo="alice/tiny-sft", revision=None, base="alice/tiny-base", data="sib200-eng")
    recipe_hash = recipe.recipe_hash()
    merge = MergeEntry(
        id=merge_entry_id(output_repo="alice/tiny-merge-ben", recipe_hash=recipe_hash),
        method="ties_sv",
        recipe_hash=recipe_hash,
        inputs=(
            MergeInput(role="ct", repo=ct.repo, revision=ct.revision, entry_id=ct.id),
            MergeInput(role="sft", repo=sft.repo, revision=sft.revision, entry_id=sft.id),
            MergeInput(role="base", repo="alice/tiny-base", revision=ct.base.revision or ""),
        ),
        output_repo="alice/tiny-merge-ben",
        output_revision=merged_sha,
        status="evaluated",
        languages=(LANG,),
        results=tuple(EvalResult(task=t, metric=m, value=v, language=LANG) for t, (m, v) in MERGE_SCORES.items()),
    )
    store.add_many([ct, sft, merge])
    # Repos for the bad-input and Submit tests.
    _push(hub, family.ct, "alice/tiny-ct-submit", tmp,
          readme=_card(language="bn", base="alice/tiny-base", scores={}, name="tiny-ct-submit"))  # fmt: skip
    # A second CT (another language, its card says so) for a group merge.
    _push(hub, family.ct, "alice/tiny-ct-khk", tmp,
          readme=_card(language="khk", base="alice/tiny-base", scores={}, name="tiny-ct-khk"))  # fmt: skip
    khk = build_ct_entry(client, repo="alice/tiny-ct-khk", revision=None, language="khk_Cyrl", base="alice/tiny-base")
    store.add(khk)
    _push(hub, family.ct, "alice/tiny-ct-nolang", tmp,
          readme=_card(language=None, base="alice/tiny-base", scores={}, name="tiny-ct-nolang"))  # fmt: skip
    private_sha = _push(hub, family.sft, "bob/private-model", tmp, private=True, token=hub.bob_token)
    # A published merge whose output repo is private to bob: only bob may see it anywhere in the Space.
    store.add(
        MergeEntry(
            id=merge_entry_id(output_repo="bob/private-model", recipe_hash=recipe_hash),
            method="ties_sv", recipe_hash=recipe_hash, inputs=merge.inputs, output_repo="bob/private-model",
            output_revision=private_sha, status="published", languages=("tam_Taml",),
        )
    )  # fmt: skip
    bert = tmp / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    shutil.copy(family.base / "model.safetensors", bert / "model.safetensors")
    _push(hub, bert, "alice/not-llama", tmp)
    return ct.id, sft.id, merged


def _examples_dir(root: Path) -> Path:
    # Our own two sentences in the shared-data layout (no real data is copied into tests).
    (root / "flores200" / "devtest").mkdir(parents=True)
    (root / "flores200" / "devtest" / f"{LANG}.jsonl").write_text(
        json.dumps({"id": 0, "lang": LANG, "text": "আমি ভাত খাই।"}) + "\n", encoding="utf-8"
    )
    return root


def _launch(services: Any) -> tuple[Any, str]:
    from space.app import build_app

    demo = build_app(services=services)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    return demo, url.rstrip("/")


@pytest.fixture(scope="module")
def world(hub: HubHandle, tiny_family: DemoFamily, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from gradio_client import Client

    from space.config import SpaceConfig
    from space.services import SpaceServices

    tmp = tmp_path_factory.mktemp("space")
    ct_id, sft_id, merged = _build_catalog(hub, tiny_family, tmp)
    bot = StandInBot().start()
    config = SpaceConfig(
        endpoint=hub.url, token=hub.token, registry=REGISTRY, bot_url=bot.url,
        data_dir=_examples_dir(tmp / "data"), workdir=tmp / "work", max_new_tokens=64, device="cpu",
    )  # fmt: skip
    services = SpaceServices(config, hub=hub.client())
    demo, url = _launch(services)
    client = Client(url, verbose=False)
    yield World(hub, tiny_family, merged, ct_id, sft_id, bot, services, url, client)
    demo.close()
    bot.stop()


def _greedy(model_dir: Path, prompt: str, n: int) -> str:
    """The reference answer: plain transformers greedy decoding of a local checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def _app_error(call: Any) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call()
    return str(info.value)


# -- the named API ------------------------------------------------------------------------------
def test_named_endpoints(world: World) -> None:
    api = world.client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/generate", "/leaderboard", "/merge_preview", "/submit", "/job_status"}
    names = {name: [p["parameter_name"] for p in spec["parameters"]] for name, spec in api.items()}
    assert names["/generate"] == ["model_id", "prompt", "max_new_tokens", "temperature"]
    assert names["/merge_preview"] == ["ct_id", "sft_id", "method", "density", "slack", "ct_weight", "sft_weight"]
    assert names["/submit"] == ["ct_repo_id", "language"]


def test_generate_streams_the_greedy_answer(world: World) -> None:
    prompt = "আমি ভাত"
    job = world.client.submit("alice/tiny-merge-ben", prompt, 12, api_name="/generate")
    final = job.result(timeout=120)
    partials = job.outputs()
    assert final == _greedy(world.merged_dir, prompt, 12)
    assert final and len(partials) > 1, partials
    for shorter, longer in zip(partials, partials[1:], strict=False):
        assert longer.startswith(shorter)


def test_generate_bad_inputs_say_what_is_wrong(world: World) -> None:
    c = world.client
    assert "prompt is empty" in _app_error(lambda: c.predict("alice/tiny-merge-ben", "  ", 8, api_name="/generate"))
    missing = _app_error(lambda: c.predict("alice/no-such-model", "hi", 8, api_name="/generate"))
    assert "alice/no-such-model" in missing and "Traceback" not in missing
    # The Space reads models as the caller (anonymous here), never with its own token: a private
    # repo answers exactly as a missing one (no existence oracle).
    private = _app_error(lambda: c.predict("bob/private-model", "hi", 8, api_name="/generate"))
    nothing = _app_error(lambda: c.predict("bob/no-such-model", "hi", 8, api_name="/generate"))
    assert "bob/private-model" in private
    assert private.replace("private-model", "X") == nothing.replace("no-such-model", "X")
    assert "config.json" not in private
    bert = _app_error(lambda: c.predict("alice/not-llama", "hi", 8, api_name="/generate"))
    assert "not a causal language model" in bert and "BertModel" in bert
    long_prompt = _app_error(lambda: c.predict("alice/tiny-merge-ben", "x" * 600, 8, api_name="/generate"))
    assert "context of 512 tokens" in long_prompt and "601 tokens" in long_prompt
    zero = _app_error(lambda: c.predict("alice/tiny-merge-ben", "hi", 0, api_name="/generate"))
    assert "max_new_tokens must be from 1 to 64" in zero
    lots = _app_error(lambda: c.predict("alice/tiny-merge-ben", "hi", "lots", api_name="/generate"))
    assert lots == "max_new_tokens must be a whole number from 1 to 64, not 'lots'"
    hot = _app_error(lambda: c.predict("alice/tiny-merge-ben", "hi", 4, 9.0, api_name="/generate"))
    assert hot == "temperature must be in [0, 2], not 9"
    huge = _app_error(lambda: c.predict("alice/tiny-merge-ben", "x" * 1_000_000, 4, api_name="/generate"))
    assert huge.startswith("the prompt is 1,000,000 characters; this Space takes at most 8,000")
    bad_id = _app_error(lambda: c.predict("not a repo", "hi", 8, api_name="/generate"))
    assert "not a repo" in bad_id


def test_examples_in_the_language(world: World) -> None:
    assert world.services.examples(LANG) == ["আমি ভাত খাই।"]
    assert world.services.examples("tam_Taml") == []


def test_ten_users_generating_at_once(world: World) -> None:
    jobs = [world.client.submit("alice/tiny-ct-ben", f"user {i}", 6, api_name="/generate") for i in range(10)]
    answers = [job.result(timeout=300) for job in jobs]
    assert answers == [_greedy(world.family.ct, f"user {i}", 6) for i in range(10)]
    loaded = [k.split("@")[0] for k in world.services.models.keys()]
    assert loaded.count("alice/tiny-ct-ben") == 1  # loaded once, shared


def test_model_too_large_is_refused_up_front(world: World) -> None:
    from space.config import SpaceConfig
    from space.errors import ModelTooLargeError
    from space.services import SpaceServices

    small = SpaceServices(
        SpaceConfig(endpoint=world.hub.url, token=world.hub.token, registry=REGISTRY, cache_bytes=100_000),
        hub=world.hub.client(cache="cache-small"),
    )
    with pytest.raises(ModelTooLargeError) as info:
        next(small.generate("alice/tiny-sft", "hi", 4))
    message = str(info.value)
    assert "alice/tiny-sft" in message and "100.0 kB" in message and "safetensors headers" in message
    assert not (world.hub.home / "cache-small").exists() or not list(
        (world.hub.home / "cache-small").rglob("*.safetensors")
    )


def test_model_cache_evicts_least_recently_used(world: World) -> None:
    from space.config import SpaceConfig
    from space.services import SpaceServices

    # Each tiny model's weights take 460,032 bytes (115,008 fp32 parameters): two fit in 1 MB.
    two = SpaceServices(
        SpaceConfig(endpoint=world.hub.url, token=world.hub.token, registry=REGISTRY, cache_bytes=1_000_000),
        hub=world.hub.client(),
    )
    for model in ("alice/tiny-merge-ben", "alice/tiny-ct-ben", "alice/tiny-merge-ben", "alice/tiny-sft"):
        list(two.generate(model, "hi", 2))
    assert [k.split("@")[0] for k in two.models.keys()] == ["alice/tiny-merge-ben", "alice/tiny-sft"]
    assert two.models.used == 2 * 460_032


def test_leaderboard(world: World) -> None:
    rows = world.client.predict(LANG, api_name="/leaderboard")
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"alice/tiny-merge-ben", "alice/tiny-ct-ben", "alice/tiny-sft"}
    merged = by_model["alice/tiny-merge-ben"]
    assert merged["flores_ben_Beng bits_per_byte"] == 3.0 and merged["sib200_eng_Latn acc"] == 0.34
    assert merged["language gain kept"] == pytest.approx(4.0 / 5.7, abs=1e-4)
    assert merged["task gain kept"] == pytest.approx(0.14 / 0.18, abs=1e-4)
    assert by_model["alice/tiny-ct-ben"]["flores_ben_Beng bits_per_byte"] == 1.3
    assert merged["link"] == f"{world.hub.url}/api/models/alice/tiny-merge-ben"
    import httpx

    assert httpx.get(merged["link"], timeout=30).status_code == 200  # the link resolves
    unknown = _app_error(lambda: world.client.predict("tam_Taml", api_name="/leaderboard"))
    assert "tam_Taml" in unknown and LANG in unknown


def test_merge_preview_matches_the_engine(world: World) -> None:
    from registry.merge.engine import run_merge
    from registry.merge.plan import plan_merge
    from registry.recipe import parse_recipe

    answer = world.client.predict(world.ct_id, world.sft_id, "ties_sv", 0.5, 0.3, api_name="/merge_preview")
    summary = answer["summary"]
    # The API returns what the page plots: per-layer rows and the merge time.
    assert {"layer", "stat", "share", "count"} == set(answer["layers"][0]) and answer["seconds"] > 0
    assert {row["stat"] for row in answer["layers"]} >= {"sign conflicts", "rescued by slack"}
    fam = world.family
    recipe = parse_recipe(
        {
            "merge_method": "ties_sv", "base_model": str(fam.base), "tokenizer_source": "ct",
            "models": [
                {"model": str(fam.ct), "role": "ct", "language": LANG, "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": str(fam.sft), "role": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
            ],
            "parameters": {"slack": 0.3},
        }
    )  # fmt: skip
    expected = run_merge(plan_merge(recipe), out=world.services.workdir() / "reference", device="cpu", progress=False)

    def numbers(text: str) -> list[str]:
        return [line.split(":", 1)[-1] for line in text.splitlines() if "conflicts" in line or "tensors" in line]

    assert summary.startswith("ties_sv:") and "rescued by slack" in summary
    assert numbers(summary) == numbers(expected.report.summary())
    group = world.client.predict(
        f"{world.ct_id}, alice/tiny-ct-khk", world.sft_id, "ties_sv", 0.5, 0.1, api_name="/merge_preview"
    )
    group = group["summary"]
    assert "ct alice/tiny-ct-ben@" in group and "ct alice/tiny-ct-khk@" in group and "sft alice/tiny-sft@" in group
    methods = _app_error(
        lambda: world.client.predict(world.ct_id, world.sft_id, "nope", 0.5, 0.3, api_name="/merge_preview")
    )
    assert "ties_sv" in methods and "linear" in methods
    density = _app_error(
        lambda: world.client.predict(world.ct_id, world.sft_id, "ties", 0.0, 0.0, api_name="/merge_preview")
    )
    assert "density" in density
    five = _app_error(
        lambda: world.client.predict(world.ct_id, world.sft_id, "ties", 5, 0.0, api_name="/merge_preview")
    )
    assert five == "density must be in (0, 1], not 5"
    unknown = _app_error(
        lambda: world.client.predict("ct-nope", world.sft_id, "ties", 0.5, 0.0, api_name="/merge_preview")
    )
    assert "ct-nope" in unknown


def test_submit_and_job_status_through_the_bot(world: World) -> None:
    from gradio_client import Client

    sent = len(world.bot.requests)
    anonymous = _app_error(lambda: world.client.predict("alice/tiny-ct-submit", "", api_name="/submit"))
    assert anonymous == "sign in with Hugging Face to submit: the bot runs the job as you"
    assert len(world.bot.requests) == sent
    bob = Client(world.url, verbose=False, oauth_token=world.hub.bob_token)
    answer = bob.predict("alice/tiny-ct-submit", "", api_name="/submit")
    assert answer["job_id"] == answer["job_ids"][0] and answer["reasons"] == []
    request = world.bot.requests[-1]
    assert request["body"] == {"ct_repo": "alice/tiny-ct-submit", "language": LANG}
    assert request["auth"] == f"Bearer {world.hub.bob_token}"  # the visitor's own token, not the Space's
    _, mine = world.services.my_jobs(world.hub.bob_token)
    assert [row[0].split("]")[0].lstrip("[") for row in mine] == [answer["job_id"]]
    job_id = answer["job_id"]
    assert mine[0][0] == f"[{job_id}]({world.bot.url}/jobs/{job_id})"  # the bot's own links
    assert mine[0][5] == f"[discussion]({world.bot.url}/discussions/{job_id})"
    assert world.services.my_jobs(None)[1] == []
    assert job_id not in str(world.services.my_jobs(world.hub.token)[1])  # alice does not see bob's job
    assert world.client.predict(answer["job_id"], api_name="/job_status") == "queued"
    assert "no job job-404" in _app_error(lambda: world.client.predict("job-404", api_name="/job_status"))


def test_hand_to_the_bot_sends_the_recipe_on_screen(world: World) -> None:
    import yaml

    from registry.recipe import parse_recipe
    from space.errors import SignInRequiredError, SpaceError

    services, sent = world.services, len(world.bot.requests)
    with pytest.raises(SignInRequiredError):
        services.hand_to_bot([world.ct_id], world.sft_id, "ties_sv", 0.4, 0.15, token=None)
    with pytest.raises(SpaceError, match="density must be in"):
        services.hand_to_bot([world.ct_id], world.sft_id, "ties_sv", 5, 0.15, token=world.hub.token)
    assert len(world.bot.requests) == sent  # refused before the bot is asked
    answers = services.hand_to_bot([world.ct_id], world.sft_id, "dare_ties", 0.4, 0.15, 0.8, 1.2, token=world.hub.token)
    assert [a.job_ids for a in answers] == [answers[0].job_ids] and answers[0].job_ids
    request = world.bot.requests[-1]
    assert request["auth"] == f"Bearer {world.hub.token}" and request["body"]["ct_repo"] == "alice/tiny-ct-ben"
    recipe = parse_recipe(yaml.safe_load(request["body"]["recipe"]["text"]))
    assert recipe.merge_method == "dare_ties" and recipe.densities() == (0.4, 0.4) and recipe.weights() == (0.8, 1.2)
    assert recipe.parameters.slack == 0.15  # type: ignore[attr-defined]
    ct = services.view().find_checkpoint(world.ct_id)
    assert ct is not None and recipe.models[0].model == f"alice/tiny-ct-ben@{ct.revision}"
    # A method without density or slack (task arithmetic) sends neither.
    services.hand_to_bot([world.ct_id], world.sft_id, "task_arithmetic", 0.4, 0.15, token=world.hub.token)
    linear = parse_recipe(yaml.safe_load(world.bot.requests[-1]["body"]["recipe"]["text"]))
    assert linear.merge_method == "task_arithmetic" and all(m.parameters.density is None for m in linear.models)
    assert "slack" not in linear.to_yaml()


def test_submit_gives_every_reason(world: World) -> None:
    from gradio_client import Client

    alice = Client(world.url, verbose=False, oauth_token=world.hub.token)
    sent = len(world.bot.requests)
    nolang = alice.predict("alice/tiny-ct-nolang", "", api_name="/submit")
    assert nolang["job_id"] is None and any("no language" in r for r in nolang["reasons"])
    missing = alice.predict("alice/nothing-here", "", api_name="/submit")
    assert missing["job_id"] is None and "alice/nothing-here" in missing["reasons"][0]
    bert = alice.predict("alice/not-llama", LANG, api_name="/submit")
    assert bert["job_id"] is None and "alice/not-llama" in bert["reasons"][0] and "hidden_size" in bert["reasons"][0]
    with_language = alice.predict("alice/tiny-ct-nolang", LANG, api_name="/submit")
    assert with_language["job_id"] is not None
    assert len(world.bot.requests) == sent + 1  # refused submissions never reach the bot


def test_bot_unreachable_and_hub_unreachable(world: World) -> None:
    import httpx
    from gradio_client import Client

    from space.config import SpaceConfig
    from space.services import SpaceServices

    no_bot = SpaceServices(
        SpaceConfig(
            endpoint=world.hub.url, token=world.hub.token, registry=REGISTRY, bot_url=f"http://127.0.0.1:{_free_port()}"
        ),
        hub=world.hub.client(),
    )
    no_hub = SpaceServices(SpaceConfig(endpoint=f"http://127.0.0.1:{_free_port()}", token="x", registry=REGISTRY))
    demos = [_launch(no_bot), _launch(no_hub)]
    try:
        (_, bot_url), (_, hub_url) = demos
        client = Client(bot_url, verbose=False, oauth_token=world.hub.token)
        message = _app_error(lambda: client.predict("alice/tiny-ct-submit", "", api_name="/submit"))
        assert "unreachable" in message and "everything else in the Space works" in message
        assert client.predict(LANG, api_name="/leaderboard")  # the rest works
        page = httpx.get(hub_url, timeout=30)
        assert page.status_code == 200
        assert httpx.get(f"{hub_url}/config", timeout=30).json()["title"] == "Mergeling"
        assert "cannot be reached" in no_hub.status()  # what the page's status line says on load
        assert "unreachable (Submit waits for it)" in no_bot.status() and "2 CT, 1 SFT" in no_bot.status()
        down = _app_error(lambda: Client(hub_url, verbose=False).predict(LANG, api_name="/leaderboard"))
        assert "cannot be reached" in down
    finally:
        for demo, _ in demos:
            demo.close()


def test_registry_space_cli_prints_its_url_first(world: World) -> None:
    import httpx

    env = world.hub.env()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from registry.cli import main; main()", "space", "--registry", REGISTRY, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", line), line
        page = httpx.get(line, timeout=30)
        assert page.status_code == 200 and "Mergeling" in page.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- a real browser ---------------------------------------------------------------------------
def _shots(tmp_path: Path) -> Path:
    """Where screenshots go: $SPACE_SCREENSHOTS (to look at them after the run), else the test's tmp dir."""
    import os

    folder = Path(os.environ.get("SPACE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


TABS = ("Try", "Leaderboard", "Merge", "Submit", "Registry")
SCRIPTS = {
    "Mergeling Bengali": "আমি", "Mergeling Tamil": "தமிழ்", "Mergeling Telugu": "తెలుగు", "Mergeling Odia": "ଓଡ଼ିଆ",
    "Mergeling Tibetan": "བོད", "Mergeling Arabic": "ئۇيغۇر", "Mergeling Mongolian": "ᠮᠣᠩᠭᠣᠯ",
}  # fmt: skip


# Tofu: draw each base character of a sample in the font an element of the page really uses, and
# compare its pixels with those of U+0378 (unassigned: no font has it, so it is drawn as the missing
# glyph). A character drawn exactly like it is a box. Returns the boxed characters per sample.
TOFU_JS = """async ([selector, samples]) => {
  const element = document.querySelector(selector);
  const font = `32px ${getComputedStyle(element).fontFamily}`;
  for (const s of samples) await document.fonts.load(font, s);
  const canvas = document.createElement("canvas");
  canvas.width = 96; canvas.height = 64;
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  const draw = (text) => {
    ctx.clearRect(0, 0, 96, 64); ctx.font = font; ctx.fillStyle = "#000"; ctx.fillText(text, 8, 44);
    return Array.from(ctx.getImageData(0, 0, 96, 64).data).join(",");
  };
  const missing = draw("\u0378");
  const out = {};
  for (const s of samples) out[s] = [...s].filter(ch => !/\\p{M}/u.test(ch) && draw(ch) === missing);
  return {font, boxes: out};
}"""


def _no_system_font_for(language: str) -> bool:
    """Whether fontconfig has no font for a language (so, without ours, its text would be boxes)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    return not subprocess.run(
        [fc_list, f":lang={language}"], capture_output=True, text=True, check=False
    ).stdout.strip()


def test_browser_phone_width_every_tab_reachable_no_overflow(world: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    shots = _shots(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width, height in ((390, 844), (1440, 900)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(world.url)
                expect(page.locator("#status")).to_contain_text(REGISTRY, timeout=30_000)
                expect(page.locator("#try-merged input")).to_have_value(re.compile("tiny-merge-ben"), timeout=30_000)
                # Each script's text is drawn with the font served by the app (not boxes, whatever the
                # system has): the browser loads our face for a character of every script.
                for family, sample in SCRIPTS.items():
                    faces = page.evaluate(
                        "([f, s]) => document.fonts.load(`16px '${f}'`, s).then(l => l.length)", [family, sample]
                    )
                    assert faces >= 1, f"{family} did not load for {sample!r}"
                # No boxes: in the font the prompt box and the page's text really use, every character
                # of the seven scripts is drawn differently from the missing glyph.
                for selector in ("#try-prompt textarea", "#status"):
                    drawn = page.evaluate(TOFU_JS, [selector, list(SCRIPTS.values())])
                    assert all(not boxes for boxes in drawn["boxes"].values()), (selector, drawn)
                if _no_system_font_for("bn"):  # the check can fail: without our fonts, Bengali is boxes
                    page.add_style_tag(content="#status { font-family: sans-serif !important; }")
                    bare = page.evaluate(TOFU_JS, ["#status", [SCRIPTS["Mergeling Bengali"]]])
                    assert bare["boxes"][SCRIPTS["Mergeling Bengali"]], bare
                    page.reload()
                    expect(page.locator("#status")).to_contain_text(REGISTRY, timeout=30_000)
                for tab in TABS:
                    button = page.get_by_role("tab", name=tab, exact=True)
                    expect(button).to_be_visible()  # not hidden behind an overflow menu
                    button.click()
                    page.wait_for_timeout(800)
                    page.screenshot(path=str(shots / f"{tab.lower()}-{width}.png"), full_page=True)
                    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert overflow <= 0, f"{tab} at {width} px overflows by {overflow} px"
                    if tab != "Try":  # the first tab is the default (selecting it again fires nothing)
                        assert f"tab={tab.lower()}" in page.url  # the address bar follows (shareable)
                page.close()
            # A shared link opens the same view: tab, language, model and prompt from the URL.
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{world.url}/?tab=leaderboard&lang={LANG}&model=alice/tiny-merge-ben&prompt=আমি")
            expect(page.locator("#leaderboard-table")).to_contain_text("tiny-merge-ben", timeout=30_000)
            expect(page.locator("#leaderboard-table")).to_be_visible()
            page.get_by_role("tab", name="Try", exact=True).click()
            expect(page.locator("#try-prompt textarea")).to_have_value("আমি", timeout=30_000)
            expect(page.locator("#try-merged input")).to_have_value(re.compile("alice/tiny-merge-ben"))
            page.goto(f"{world.url}/#registry")
            expect(page.locator("#registry-table")).to_be_visible(timeout=30_000)
            page.close()
        finally:
            browser.close()


def test_browser(world: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(world.url)
            expect(page).to_have_title("Mergeling")
            expect(page.get_by_role("heading", name="Mergeling")).to_be_visible()
            expect(page.locator("#status")).to_contain_text(REGISTRY, timeout=30_000)
            # The first language is picked on load, and its merged models are listed without a click.
            expect(page.locator("#try-merged input")).to_have_value(re.compile("alice/tiny-merge-ben"), timeout=30_000)
            # Try: pick the language, then generate.
            page.locator("#try-language input").click()
            page.get_by_role("option", name=LANG).click()
            expect(page.locator("#try-merged input")).to_have_value(re.compile("alice/tiny-merge-ben"), timeout=30_000)
            page.locator("#try-prompt textarea").fill("আমি ভাত")
            page.locator("#try-generate").click()
            expect(page.locator("#out-merged textarea")).not_to_have_value("", timeout=60_000)
            expect(page.locator("#out-ct textarea")).not_to_have_value("", timeout=60_000)
            page.screenshot(path=str(tmp_path / "try.png"), full_page=True)
            # Leaderboard: a row and a plot.
            page.get_by_role("tab", name="Leaderboard").click()
            expect(page.locator("#leaderboard-table")).to_contain_text("tiny-merge-ben", timeout=30_000)
            expect(page.locator("#leaderboard-scatter [role='graphics-symbol']").first).to_be_attached(timeout=30_000)
            expect(page.locator("#leaderboard-bars path[aria-roledescription='bar'][fill]").first).to_be_attached(
                timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
            # Merge: a tiny merge and its diagnostics.
            page.get_by_role("tab", name="Merge").click()
            page.locator("#merge-prompt input, #merge-prompt textarea").first.fill("আমি")
            page.locator("#merge-go").click()
            expect(page.locator("#merge-summary textarea")).to_have_value(re.compile("ties_sv: "), timeout=120_000)
            # Bars drawn with a colour per statistic (not only the axes).
            expect(page.locator("#merge-layers path[aria-roledescription='bar'][fill]").first).to_be_attached()
            expect(page.locator("#merge-answer input, #merge-answer textarea").first).not_to_have_value("")
            # The session's runs side by side, labelled repo@short-sha.
            expect(page.locator("#merge-history")).to_contain_text("alice/tiny-ct-ben@")
            expect(page.locator("#merge-history")).to_contain_text("ties_sv")
            # The CT and SFT weights are on screen (they go into the recipe); handing over needs sign-in.
            expect(page.locator("#merge-ct-weight")).to_be_visible()
            page.locator("#merge-bot").click()
            expect(page.get_by_text("sign in with Hugging Face to hand a merge to the bot").first).to_be_visible(
                timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "merge.png"), full_page=True)
            # Submit: a CT handed to the (stand-in) bot from the page, then seen in its queue (a timer refreshes it).
            page.get_by_role("tab", name="Submit").click()
            page.locator("#submit-repo textarea, #submit-repo input").first.fill("alice/tiny-ct-submit")
            page.get_by_role("button", name="Check and submit").click()
            # Anonymous: Submit says to sign in (no job reaches the bot), and My jobs is empty.
            expect(page.get_by_text("sign in with Hugging Face to submit").first).to_be_visible(timeout=30_000)
            expect(page.locator("#jobs-note")).to_contain_text("Sign in to see your jobs", timeout=30_000)
            page.screenshot(path=str(tmp_path / "submit.png"), full_page=True)
            # Registry: lineage and revisions.
            page.get_by_role("tab", name="Registry").click()
            expect(page.locator("#registry-table")).to_contain_text(
                "alice/tiny-base → alice/tiny-ct-ben", timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "registry.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshots in {tmp_path}")
    assert errors == []


def test_browser_status_line_follows_the_catalog_and_the_bot(world: World, tmp_path: Path) -> None:
    """The counts on an open page change when the catalog and the bot's queue do: no reload, no click."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    from registry.catalog.store import CatalogStore
    from registry.catalog.verify import build_ct_entry, build_sft_entry
    from space.config import SpaceConfig
    from space.services import SpaceServices

    client = world.hub.client()
    registry = "alice/status-registry"  # its own catalog and bot: the module's stay as they are
    store = CatalogStore(hub=client, repo_id=registry)
    store.add(build_sft_entry(client, repo="alice/tiny-sft", revision=None, base="alice/tiny-base", data="sib200-eng"))
    bot = StandInBot().start()
    config = SpaceConfig(
        endpoint=world.hub.url, token=world.hub.token, registry=registry, bot_url=bot.url, device="cpu",
        status_every_s=1.0, catalog_ttl_s=0.5, visible_ttl_s=0.5,
    )  # fmt: skip
    demo, url = _launch(SpaceServices(config, hub=client))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(url)
                status = page.locator("#status")
                expect(status).to_contain_text("0 CT, 1 SFT, 0 merges", timeout=30_000)
                expect(status).to_contain_text("0 jobs queued, 0 running")
                store.add(build_ct_entry(client, repo="alice/tiny-ct-ben", revision=None, language=LANG,
                                         base="alice/tiny-base"))  # fmt: skip
                bot.jobs.insert(0, {"id": "job-x", "state": "queued", "ct_repo": "alice/tiny-ct-ben"})
                expect(status).to_contain_text("1 CT, 1 SFT, 0 merges", timeout=20_000)
                expect(status).to_contain_text("1 job queued, 0 running", timeout=20_000)
                page.screenshot(path=str(_shots(tmp_path) / "status-refreshed.png"))
                bot.stop()  # the bot goes away: the line says so, the counts stay
                expect(status).to_contain_text("unreachable", timeout=20_000)
                expect(status).to_contain_text("1 CT, 1 SFT, 0 merges")
            finally:
                browser.close()
    finally:
        demo.close()
        bot.stop()


def test_a_private_merge_reaches_only_who_can_read_it(world: World) -> None:
    from gradio_client import Client

    services = world.services
    anonymous = {row["model"] for row in world.client.predict("", api_name="/leaderboard")}
    assert "bob/private-model" not in anonymous and "alice/tiny-merge-ben" in anonymous
    assert "tam_Taml" not in services.languages(None)
    assert all(row["repo"] != "bob/private-model" for row in services.registry_rows(None, None))
    assert "bob/private-model" not in [t.merge.output_repo for t in services.trios(None, world.hub.token)]
    assert "1 merge ·" in services.status(None)  # counts only what the visitor can read
    bob = Client(world.url, verbose=False, oauth_token=world.hub.bob_token)
    assert "bob/private-model" in {row["model"] for row in bob.predict("", api_name="/leaderboard")}
    assert "bob/private-model" in [t.merge.output_repo for t in services.trios("tam_Taml", world.hub.bob_token)]
    # bob runs his own private model with his own token; the cache does not hand it to anyone else.
    assert bob.predict("bob/private-model", "hi", 2, api_name="/generate") == _greedy(world.family.sft, "hi", 2)
    again = _app_error(lambda: world.client.predict("bob/private-model", "hi", 2, api_name="/generate"))
    assert "bob/private-model" in again and "config.json" not in again


def test_twenty_concurrent_megabyte_prompts_leave_memory_flat(world: World) -> None:
    """1 MB prompts are refused by their length before any tokenizer sees them, 20 at once, and the
    Space's resident memory does not grow with them (it rose by ~1 GB and stayed there before)."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    import psutil
    from gradio_client import Client

    me = psutil.Process()
    client = Client(world.url, verbose=False)
    list(world.services.generate("alice/tiny-merge-ben", "hi", 1))  # the model is loaded before measuring
    gc.collect()
    before = me.memory_info().rss
    prompt = "আ" * (1_000_000 // 3)  # 1 MB of UTF-8

    def one(i: int) -> str:
        return _app_error(lambda: client.predict("alice/tiny-merge-ben", prompt + str(i), 8, api_name="/generate"))

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    gc.collect()
    grown = me.memory_info().rss - before
    print(f"RSS before {before / 1e6:.0f} MB, after 20 concurrent 1 MB prompts {grown / 1e6:+.0f} MB")
    assert all(re.match(r"the prompt is 333,33\d characters; this Space takes at most 8,000", a) for a in answers)
    assert grown < 150e6, f"resident memory grew by {grown / 1e6:.0f} MB"
