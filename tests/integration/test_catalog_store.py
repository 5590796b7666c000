"""The catalog store on a real embedded hub: round trips, merge records, and concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.catalog.entries import (
    CtEntry,
    EvalResult,
    MergeEntry,
    MergeInput,
    ModelRef,
    ModelShape,
    ct_entry_id,
    merge_entry_id,
    parse_entry,
)
from registry.catalog.store import CatalogStore, record_merge
from registry.errors import CatalogError
from registry.hub import HubClient
from tests._fixtures.hub import REPO_ROOT, HubHandle

SHAPE = ModelShape(
    architecture="LlamaForCausalLM", model_type="llama", hidden_size=64, num_hidden_layers=2,
    intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=320,
)  # fmt: skip


def _ct(sha: str, language: str = "ben_Beng") -> CtEntry:
    return CtEntry(
        id=ct_entry_id(repo="lab/ct", revision=sha, language=language), repo="lab/ct", revision=sha,
        language=language, base=ModelRef(repo="lab/base", revision="b" * 40), shape=SHAPE,
    )  # fmt: skip


def test_add_get_list_remove_round_trip(hub: HubHandle) -> None:
    store = CatalogStore(hub=hub.client(), repo_id="alice/store-roundtrip")
    with pytest.raises(CatalogError, match="does not exist on this Hub"):
        store.list_entries()
    first, second = _ct("1" * 40), _ct("2" * 40, language="tam_Taml")
    sha = store.add(first)
    assert len(sha) == 40
    store.add(second)
    assert [e.id for e in store.list_entries()] == sorted([first.id, second.id])
    assert store.get(first.id) == first
    assert store.list_entries(kind="sft") == []
    # The stored file is the entry's JSON at entries/<kind>/<id>.json, readable by any client.
    raw = hub.client(cache="raw").read_file(
        "alice/store-roundtrip", f"entries/ct/{first.id}.json", repo_type="dataset", revision="main"
    )
    assert parse_entry(raw) == first
    with pytest.raises(CatalogError, match="already in registry"):
        store.add(first)
    store.remove(first.id)
    assert [e.id for e in store.list_entries()] == [second.id]
    with pytest.raises(CatalogError, match="no entry 'ct-ben_Beng-lab--ct-1111111'"):
        store.get(first.id)
    with pytest.raises(CatalogError, match="no entry"):
        store.remove(first.id)
    with pytest.raises(CatalogError, match="does not start with one of"):
        store.get("../../etc/passwd")


def test_stray_files_are_ignored_and_a_corrupt_entry_is_named(hub: HubHandle) -> None:
    store = CatalogStore(hub=hub.client(), repo_id="alice/store-stray")
    entry = _ct("6" * 40)
    store.add(entry)
    hub.client().commit_files(
        "alice/store-stray", repo_type="dataset", message="Stray files",
        add={"README.md": b"# registry\n", "entries/ct/notes.txt": b"x", f"entries/sft/{entry.id}.json": b"{}"},
    )  # fmt: skip
    assert store.entry_ids() == [entry.id]
    broken = "ct-ben_Beng-lab--ct-main"
    hub.client().commit_files(
        "alice/store-stray", repo_type="dataset", message="Broken", add={f"entries/ct/{broken}.json": b'{"kind": "ct"}'}
    )
    with pytest.raises(
        CatalogError, match=rf"'entries/ct/{broken}.json' at \w{{7}} is not a valid entry.*registry remove {broken}"
    ):
        store.list_entries()
    store.remove(broken)
    assert store.list_entries() == [entry]


def test_record_merge_updates_in_place(hub: HubHandle) -> None:
    store = CatalogStore(hub=hub.client(), repo_id="alice/store-merges")
    recipe_hash = "e" * 64
    pending = MergeEntry(
        id=merge_entry_id(output_repo="alice/ben-ties-sv", recipe_hash=recipe_hash), method="ties_sv",
        recipe_hash=recipe_hash, output_repo="alice/ben-ties-sv", languages=("ben_Beng",),
        inputs=(MergeInput(role="ct", repo="lab/ct", revision="1" * 40), MergeInput(role="sft", repo="lab/sft", revision="2" * 40)),
    )  # fmt: skip
    record_merge(store, pending)
    done = pending.model_copy(
        update={"status": "evaluated", "output_revision": "3" * 40,
                "results": (EvalResult(task="sib200", metric="acc", value=0.5, language="ben_Beng", n=204),)}
    )  # fmt: skip
    record_merge(store, MergeEntry.model_validate(done.model_dump()))
    stored = store.list_entries(kind="merge")
    assert len(stored) == 1
    assert stored[0].status == "evaluated" and stored[0].results[0].value == 0.5
    assert stored[0].updated_at >= pending.updated_at


class _RacingHub(HubClient):
    """A real client whose first commit loses a real race: another writer commits just before it."""

    def __init__(self, rival: HubClient, rival_entry: CtEntry, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rival, self.rival_entry, self.raced = rival, rival_entry, False

    def commit_files(self, repo_id: str, **kw: object) -> str:  # type: ignore[override]
        if not self.raced:
            self.raced = True
            CatalogStore(hub=self.rival, repo_id=repo_id).add(self.rival_entry)
        return super().commit_files(repo_id, **kw)  # type: ignore[arg-type]


def test_a_write_that_loses_a_race_is_retried_on_the_new_head(hub: HubHandle) -> None:
    repo = "alice/store-race"
    CatalogStore(hub=hub.client(), repo_id=repo).add(_ct("0" * 40))
    rival_entry, mine = _ct("4" * 40), _ct("5" * 40)
    racing = _RacingHub(
        hub.client(cache="rival"), rival_entry, endpoint=hub.url, token=hub.token, cache_dir=hub.home / "race"
    )
    waits: list[float] = []
    store = CatalogStore(hub=racing, repo_id=repo, sleep=waits.append)
    store.add(mine)
    assert racing.raced and len(waits) == 1  # the stale parent commit was refused (412) once
    assert set(store.entry_ids()) == {_ct("0" * 40).id, rival_entry.id, mine.id}


_WORKER = """
import sys, time
from pathlib import Path
from registry.catalog.entries import CtEntry, ModelRef, ModelShape, ct_entry_id
from registry.catalog.store import CatalogStore
from registry.errors import CatalogError
from registry.hub import HubClient

worker, endpoint, token, cache, repo, go = sys.argv[1:7]
shape = ModelShape(architecture="LlamaForCausalLM", model_type="llama", hidden_size=64, num_hidden_layers=2,
                   intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=320)
def entry(sha):
    return CtEntry(id=ct_entry_id(repo="lab/ct", revision=sha, language="ben_Beng"), repo="lab/ct", revision=sha,
                   language="ben_Beng", base=ModelRef(repo="lab/base"), shape=shape)
waits = []
store = CatalogStore(hub=HubClient(endpoint=endpoint, token=token, cache_dir=Path(cache)), repo_id=repo,
                     sleep=lambda s: (waits.append(s), time.sleep(s)))
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
won = 0
for i in range(50):
    store.add(entry(f"{worker}{i:06x}".ljust(40, "a")))
    if i % 10 == 9:  # both workers contend for the same five entries: exactly one may win each
        try:
            store.add(entry(f"f{i:06x}".ljust(40, "c")))
            won += 1
        except CatalogError:
            pass
print(f"won={won} retries={len(waits)}", flush=True)
"""


@pytest.mark.slow
def test_two_processes_adding_fifty_entries_each(hub: HubHandle, tmp_path: Path) -> None:
    repo = "alice/store-concurrent"
    CatalogStore(hub=hub.client(), repo_id=repo).ensure()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                str(worker),
                hub.url,
                hub.token,
                str(tmp_path / f"cache{worker}"),
                repo,
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=hub.env(),
        )  # fmt: skip
        for worker in (1, 2)
    ]
    for proc in procs:  # start both at once, after their imports
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    elapsed = time.monotonic() - started
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    stats = [dict(part.split("=") for part in out.split()) for out, _ in outputs]
    print(f"100+5 contended adds from 2 processes in {elapsed:.1f}s, stats {stats}")
    ids = CatalogStore(hub=hub.client(), repo_id=repo).entry_ids()
    own = [i for i in ids if not i.endswith(("-f000009", "-f000013", "-f00001d", "-f000027", "-f000031"))]
    assert len(own) == 100
    assert {i.rsplit("-", 1)[1][0] for i in own} == {"1", "2"}
    assert len(ids) == 105
    assert sum(int(s["won"]) for s in stats) == 5  # each contended entry was added exactly once
