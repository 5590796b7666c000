"""The bot's durable job queue: SQLite in WAL mode, one row per job.

A job's `key` is unique, so enqueueing is idempotent: the same (CT repo@sha, SFT repo@sha or the
group's member shas, recipe hash) returns the existing row. A trigger row (a CT revision not yet
paired) has key `ct:<repo>@<sha>`; pairing turns it into the first pair job and adds the others.

States: queued -> running -> merged -> evaluated -> published | failed | superseded | cancelled.
A worker claims a job with a lease (`lease_until`) that its heartbeat extends; a job whose lease
ran out (the worker died) is claimable again and resumes from its last finished `step`. Transient
failures put the job back in `queued` with `not_before` (exponential backoff) until `max_attempts`.

Rows hold no tokens: only repo ids, shas, states, step results and one-line errors.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bot.models import JobSpec, StepData
from registry.retry import Backoff

STATES = ("queued", "running", "merged", "evaluated", "published", "failed", "superseded", "cancelled")
ACTIVE = ("queued", "running", "merged", "evaluated")
FINAL = ("published", "failed", "superseded", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,  -- the key it was created with (see the keys table)
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    language TEXT,
    ct_repo TEXT NOT NULL,
    ct_sha TEXT,
    sft_repo TEXT,
    sft_sha TEXT,
    output_repo TEXT,
    spec TEXT NOT NULL DEFAULT '{}',
    step TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    not_before REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);
CREATE INDEX IF NOT EXISTS jobs_ct ON jobs(ct_repo, ct_sha);
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, job_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replaced (repo TEXT NOT NULL, sha TEXT NOT NULL, PRIMARY KEY (repo, sha));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_PUBLIC = (
    "id", "state", "kind", "language", "ct_repo", "ct_sha", "sft_repo", "sft_sha", "output_repo", "error",
    "attempts", "submitted_by", "created_at", "updated_at",
)  # fmt: skip


# Each migration brings the schema to its version; version 1 is the first schema (its CREATE ... IF
# NOT EXISTS also adopts a file made before versions were recorded). Append; never edit one.
_MIGRATIONS: list[tuple[int, str]] = [
    (1, _SCHEMA),
    # who asked for a job: the bearer token's user (POST /jobs) or the CT repo's owner (webhook, poll)
    (
        2,
        "ALTER TABLE jobs ADD COLUMN submitted_by TEXT; "
        "CREATE INDEX IF NOT EXISTS jobs_submitted_by ON jobs(submitted_by, seq)",
    ),
]
SCHEMA_VERSION = _MIGRATIONS[-1][0]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Job:
    """One row of the queue."""

    id: str
    key: str
    kind: str
    state: str
    ct_repo: str
    ct_sha: str | None = None
    language: str | None = None
    sft_repo: str | None = None
    sft_sha: str | None = None
    output_repo: str | None = None
    spec: JobSpec = field(default_factory=JobSpec)  # what to merge: recipe, members, sweep point
    step: str = ""  # the last finished pipeline step
    data: StepData = field(default_factory=StepData)  # step results (staging dir, eval files, commit)
    error: str | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    not_before: float = 0.0
    submitted_by: str | None = None
    created_at: str = ""
    updated_at: str = ""
    seq: int = 0

    @property
    def is_trigger(self) -> bool:
        """A CT revision not yet paired with an SFT (created as `ct:<repo>@<sha>`, no step done)."""
        return self.key.startswith("ct:") and not self.step

    def input_repos(self) -> list[str]:
        """Every repo this job reads (CT, group members, SFT, base): who may see the job is who may read them."""
        repos = [self.ct_repo, *(m.repo for m in self.spec.members)]
        repos += [self.sft_repo or "", self.spec.base_repo]
        return [r for r in dict.fromkeys(repos) if r]

    def public(self, *, endpoint: str | None = None, base_url: str | None = None) -> dict[str, Any]:
        """The job as the HTTP API and `bot status --json` show it (see docs/bot.md).

        Args:
            endpoint: the Hub, for the output repo's link (None: huggingface.co).
            base_url: the bot's URL, for the job's own link (None: no link).
        """
        out = {name: getattr(self, name) for name in _PUBLIC}
        out["step"] = self.step or None
        out["members"] = [m.model_dump() for m in self.spec.members] or None
        out["sweep_point"] = self.spec.point
        out["output_revision"] = self.data.commit
        out["discussion"] = self.data.discussion_url
        data = self.data
        out["seconds"] = {"merge": data.merge_seconds, "eval": data.eval_seconds, "publish": data.publish_seconds}
        spec = self.spec
        out["recipe"] = (
            {"source": spec.recipe_source, "hash": spec.recipe_hash or None, "custom": spec.custom_recipe is not None}
            if spec.recipe or spec.custom_recipe
            else None
        )
        hub = (endpoint or "https://huggingface.co").rstrip("/")
        out["links"] = {
            "output": f"{hub}/{self.output_repo}" if self.output_repo and data.commit else None,
            "discussion": data.discussion_url,
            "job": f"{base_url.rstrip('/')}/jobs/{self.id}" if base_url else None,
        }
        return out


def trigger_key(repo: str, sha: str, *, recipe: str | None = None) -> str:
    """The key of a CT revision's trigger row; `recipe`: a custom recipe's hash (its own trigger)."""
    return f"ct:{repo}@{sha}" + (f"|custom-{recipe}" if recipe else "")


class JobQueue:
    """The queue in `<data>/bot.sqlite3`. Safe to share between threads and processes.

    Args:
        path: the database file (created with its folder).
        lease_s: how long a claim holds without a heartbeat.
        max_attempts: transient failures tolerated before a job fails.
        backoff_s: first retry delay; doubles per attempt (capped at 5 minutes).
    """

    def __init__(self, path: Path, *, lease_s: float = 60.0, max_attempts: int = 5, backoff_s: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._local = threading.local()
        self._migrate()

    def _migrate(self) -> None:
        """Bring the schema to `SCHEMA_VERSION` (`PRAGMA user_version`), one migration at a time.

        Raises:
            RuntimeError: the file was made by a newer bot (its version is above ours).
        """
        db = self._db()
        with self._tx():
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has queue schema version {version}, newer than this bot's {SCHEMA_VERSION}; "
                    "run the newer bot, or point --data at another folder"
                )
            for target, script in _MIGRATIONS:
                if version < target:
                    for statement in script.split(";"):
                        if statement.strip() and not _has_column(db, statement):
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {target}")
                    version = target

    # -- connection ----------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def by_key(self, key: str) -> Job | None:
        """The job holding `key` (its own key, or a pair key its trigger took on)."""
        row = (
            self._db()
            .execute("SELECT jobs.* FROM keys JOIN jobs ON jobs.id = keys.job_id WHERE keys.key = ?", (key,))
            .fetchone()
        )
        return _job(row) if row else None

    def add_key(self, job_id: str, key: str) -> Job | None:
        """Give `job_id` another key (a trigger becoming a pair job); the job already holding it, if any."""
        with self._tx() as db:
            row = db.execute(
                "SELECT jobs.* FROM keys JOIN jobs ON jobs.id = keys.job_id WHERE keys.key = ?", (key,)
            ).fetchone()
            if row is not None and row["id"] != job_id:
                return _job(row)
            db.execute("INSERT OR IGNORE INTO keys (key, job_id) VALUES (?, ?)", (key, job_id))
            return None

    def list(self, *, state: str | None = None, limit: int | None = None, submitted_by: str | None = None) -> list[Job]:
        """Jobs newest first, optionally in one state and of one submitter."""
        sql, args, where = "SELECT * FROM jobs", list[Any](), []
        if state:
            where.append("state = ?")
            args.append(state)
        if submitted_by:
            where.append("submitted_by = ?")
            args.append(submitted_by)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_job(row) for row in self._db().execute(sql, args).fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {row["state"]: row["n"] for row in rows}

    def is_replaced(self, repo: str, sha: str) -> bool:
        """Whether a later delivery said `sha` is no longer the head of `repo`."""
        row = self._db().execute("SELECT 1 FROM replaced WHERE repo = ? AND sha = ?", (repo, sha)).fetchone()
        return row is not None

    # -- writing -------------------------------------------------------------------------------
    def enqueue(
        self,
        *,
        key: str,
        kind: str,
        ct_repo: str,
        ct_sha: str | None,
        language: str | None = None,
        sft_repo: str | None = None,
        sft_sha: str | None = None,
        output_repo: str | None = None,
        spec: JobSpec | None = None,
        replaces: Sequence[str] = (),
        submitted_by: str | None = None,
    ) -> tuple[Job, bool]:
        """Add a job unless one with `key` exists.

        Args:
            replaces: CT shas this revision replaced (a delivery's `oldSha`): their queued jobs
                are superseded, and later deliveries of them are ignored.
            submitted_by: who asked (the token's user for POST /jobs; the CT's owner for a push).

        Returns:
            (the job, whether it was created).
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT jobs.* FROM keys JOIN jobs ON jobs.id = keys.job_id WHERE keys.key = ?", (key,)
            ).fetchone()
            if row is not None:
                return _job(row), False
            stamp = now_iso()
            job_id = uuid.uuid4().hex[:12]
            db.execute(
                "INSERT INTO jobs (id, key, kind, state, language, ct_repo, ct_sha, sft_repo, sft_sha, output_repo,"
                " spec, submitted_by, created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id, key, kind, language, ct_repo, ct_sha, sft_repo, sft_sha, output_repo,
                    (spec or JobSpec()).model_dump_json(exclude_defaults=True), submitted_by, stamp, stamp,
                ),
            )  # fmt: skip
            db.execute("INSERT INTO keys (key, job_id) VALUES (?, ?)", (key, job_id))
            for old in replaces:
                if old and old != ct_sha:
                    db.execute("INSERT OR IGNORE INTO replaced (repo, sha) VALUES (?, ?)", (ct_repo, old))
                    db.execute(
                        "UPDATE jobs SET state = 'superseded', error = ?, updated_at = ? "
                        "WHERE ct_repo = ? AND ct_sha = ? AND state = 'queued'",
                        (f"superseded by the newer revision {ct_sha}", stamp, ct_repo, old),
                    )
            new = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(new), True

    def claim(self, owner: str, *, job_id: str | None = None) -> Job | None:
        """Take the oldest runnable job (queued and due, or active with an expired lease)."""
        now = time.time()
        with self._tx() as db:
            sql = (
                "SELECT * FROM jobs WHERE ((state = 'queued' AND not_before <= ?) "
                "OR (state IN ('running', 'merged', 'evaluated') AND (lease_until IS NULL OR lease_until < ?)))"
            )
            args: list[Any] = [now, now]
            if job_id:
                sql += " AND id = ?"
                args.append(job_id)
            row = db.execute(sql + " ORDER BY seq LIMIT 1", args).fetchone()
            if row is None:
                return None
            state = "running" if row["state"] == "queued" else row["state"]
            db.execute(
                "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?, updated_at = ? WHERE id = ?",
                (state, owner, now + self.lease_s, now_iso(), row["id"]),
            )
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def heartbeat(self, job_id: str, owner: str) -> bool:
        """Extend the lease; False when the job is no longer ours (cancelled, or taken over)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state IN "
                "('running', 'merged', 'evaluated')",
                (time.time() + self.lease_s, job_id, owner),
            )
            return cur.rowcount == 1

    def update(self, job_id: str, **fields: Any) -> Job:
        """Set fields. `data` and `spec` (a `StepData` / `JobSpec`) are merged into the stored ones:
        the fields set in the given model win; the result is validated before it is written."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            for name, model in (("data", StepData), ("spec", JobSpec)):
                if name in fields:
                    given = fields[name]
                    new = given.model_dump(mode="json", exclude_unset=True) if isinstance(given, BaseModel) else given
                    merged = model.model_validate({**json.loads(row[name]), **new})
                    fields[name] = merged.model_dump_json(exclude_defaults=True)
            fields["updated_at"] = now_iso()
            names = ", ".join(f"{k} = ?" for k in fields)
            db.execute(f"UPDATE jobs SET {names} WHERE id = ?", [*fields.values(), job_id])  # noqa: S608
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def finish_step(self, job_id: str, step: str, data: StepData, *, state: str | None = None) -> Job:
        """Record a finished step and its results (what a resumed job starts after)."""
        fields: dict[str, Any] = {"step": step, "data": data}
        if state:
            fields["state"] = state
        return self.update(job_id, **fields)

    def retry_later(self, job_id: str, error: str) -> Job:
        """A transient failure: back to queued after a backoff, or failed after `max_attempts`."""
        job = self.get(job_id)
        assert job is not None
        attempts = job.attempts + 1
        if attempts >= self.max_attempts:
            return self.fail(job_id, f"{error} (gave up after {attempts} attempts)", attempts=attempts)
        delay = Backoff(first_s=self.backoff_s, cap_s=300.0, jitter="none").delay(attempts - 1)
        return self.update(
            job_id,
            state="queued",
            error=f"{error} (attempt {attempts}, retrying in {delay:.0f} s)",
            attempts=attempts,
            not_before=time.time() + delay,
            lease_owner=None,
            lease_until=None,
        )

    def fail(self, job_id: str, error: str, *, attempts: int | None = None) -> Job:
        fields: dict[str, Any] = {"state": "failed", "error": error, "lease_owner": None, "lease_until": None}
        if attempts is not None:
            fields["attempts"] = attempts
        return self.update(job_id, **fields)

    def retry(self, job_id: str) -> Job:
        """An operator's retry: a failed or cancelled job goes back to queued (its finished steps kept)."""
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.state not in ("failed", "cancelled", "superseded"):
            raise ValueError(f"job {job_id} is {job.state}; only failed, cancelled or superseded jobs are retried")
        return self.update(job_id, state="queued", error=None, attempts=0, not_before=0, lease_owner=None)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished; a running one stops at its next step."""
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.state in FINAL:
            raise ValueError(f"job {job_id} is already {job.state}")
        return self.update(job_id, state="cancelled", error="cancelled by an operator", lease_owner=None)

    def get_meta(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row["value"] if row else None

    def set_meta(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)


def _has_column(db: sqlite3.Connection, statement: str) -> bool:
    """Whether `statement` adds a column the table already has (a file whose version was reset, say):
    every migration can then run again on any file its version allows."""
    found = _ADD_COLUMN.match(statement)
    if found is None:
        return False
    table, column = found.groups()
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["spec"] = JobSpec.model_validate_json(values["spec"])
    values["data"] = StepData.model_validate_json(values["data"])
    return Job(**values)
