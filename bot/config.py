"""The bot's settings (from `registry bot serve|run-once` options and the environment).

The token lives only here, in memory: it is never written to the queue, a log line, a card or a
comment (`BotConfig.__repr__` leaves it out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.queue import JobQueue
    from registry.hub import HubClient

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = "{ct}-{sft}-{method}"


@dataclass
class BotConfig:
    """Everything a worker needs to run the pipeline.

    Attributes:
        data: the bot's folder (queue, staging, eval cache).
        registry: the catalog dataset repo (OWNER/NAME).
        namespace: where merged models are published.
        watch: users / orgs whose CT pushes are merged (empty: any).
        endpoint: the Hub URL (HF_ENDPOINT).
        token: the bot's own Hub token (HF_TOKEN); never stored.
        recipes_dir: per-language and group recipes (`<lang>-ties-sv.yaml`, `multi-*.yaml`).
        suites_dir / tasks_dir: evaluation suites and task configs.
        data_dir / data_repo: evaluation data: a local folder, else a Hub dataset repo.
        no_eval: publish merges un-evaluated on purpose (`--no-eval`; the card and comment say so).
        eval_limit: documents per eval task (None: the whole split).
        name_template: output repo name from {ct}, {sft}, {method}, {language}.
        device: merge and eval device.
    """

    data: Path
    registry: str
    namespace: str
    watch: tuple[str, ...] = ()
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)
    recipes_dir: Path = REPO_ROOT / "recipes"
    suites_dir: Path = REPO_ROOT / "recipes" / "eval"
    tasks_dir: Path = REPO_ROOT / "recipes" / "tasks"
    data_dir: Path | None = None
    data_repo: str | None = None
    no_eval: bool = False
    eval_limit: int | None = None
    eval_batch_size: int = 8
    name_template: str = DEFAULT_TEMPLATE
    device: str = "cpu"
    executor: str = "local"
    ray_address: str | None = None
    lease_s: float = 60.0
    max_attempts: int = 5
    backoff_s: float = 2.0

    @property
    def queue_path(self) -> Path:
        return self.data / "bot.sqlite3"

    @property
    def staging(self) -> Path:
        return self.data / "staging"

    @property
    def cache_dir(self) -> Path:
        return self.data / "hf-cache"

    @property
    def eval_cache(self) -> Path:
        return self.data / "eval-cache"

    def hub(self) -> HubClient:
        from registry.hub import HubClient

        return HubClient(endpoint=self.endpoint, token=self.token, cache_dir=self.cache_dir)

    def open_queue(self) -> JobQueue:
        from bot.queue import JobQueue

        return JobQueue(self.queue_path, lease_s=self.lease_s, max_attempts=self.max_attempts, backoff_s=self.backoff_s)

    def portable(self) -> dict[str, object]:
        """The settings a Ray task needs (the token travels as a task argument, never logged)."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        out["watch"] = list(self.watch)
        return out

    @classmethod
    def from_portable(cls, values: dict[str, object]) -> BotConfig:
        kwargs = dict(values)
        for name in ("data", "recipes_dir", "suites_dir", "tasks_dir", "data_dir"):
            if kwargs.get(name) is not None:
                kwargs[name] = Path(str(kwargs[name]))
        kwargs["watch"] = tuple(kwargs.get("watch") or ())  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]


def env_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None
