"""Loading models to generate with: an up-front size check and a memory-bounded LRU cache.

Before any weight is downloaded, `ModelLoader.check` reads the repo's config.json (refusing what
is not a Llama-family causal LM) and its safetensors headers (HTTP range requests: the byte size
of the weights). A model larger than the cache budget, or than the memory free plus what evicting
the cache would release, is refused with both numbers. Loaded models sit in `ModelCache`, least
recently used first out, so their total stays under the budget.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from registry.catalog.entries import ModelRef
from registry.device import resolve_device
from registry.errors import HubEntryNotFoundError
from space.errors import ModelTooLargeError, SpaceError, UnsupportedModelError

logger = logging.getLogger(__name__)

# Llama and the architectures that share its tensor layout (what the merge engine reads).
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
_DTYPE_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "I16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_WANTED_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*")


@dataclass
class LoadedModel:
    """A model ready to generate: the torch module, its tokenizer, where it runs and its size."""

    key: str
    model: Any
    tokenizer: Any
    nbytes: int
    device: str
    context_length: int


def format_bytes(n: float) -> str:
    """`1.5 GB`-style sizes (powers of 1000, as the Hub shows them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def weights_bytes(metadata: Any) -> int:
    """Bytes of every tensor in a repo's safetensors headers (`SafetensorsRepoMetadata`)."""
    counts: dict[str, int] = metadata.parameter_count
    return sum(count * _DTYPE_BYTES.get(dtype, 4) for dtype, count in counts.items())


def check_architecture(config: dict[str, Any], *, repo: str) -> None:
    """Refuse a config that is not a Llama-family causal language model.

    Raises:
        UnsupportedModelError: naming the repo, its architecture and what the Space runs.
    """
    architectures = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type") or "unknown")
    if not any(a.endswith("ForCausalLM") for a in architectures):
        shown = ", ".join(architectures) or "no architectures in config.json"
        raise UnsupportedModelError(
            f"{repo} is not a causal language model ({shown}); the Space generates with *ForCausalLM models "
            "such as LlamaForCausalLM",
            repo_id=repo,
        )
    if model_type not in LLAMA_FAMILY:
        raise UnsupportedModelError(
            f"{repo} is a {model_type} model; Mergeling merges and serves Llama-family models "
            f"({', '.join(LLAMA_FAMILY)})",
            repo_id=repo,
        )


def check_fits(*, repo: str, needed: int, budget: int, free: int, releasable: int) -> None:
    """Refuse a model that cannot fit.

    Args:
        repo: the model, for the message.
        needed: its weights in bytes.
        budget: what the cache may hold in total.
        free: memory free now (RAM, or GPU memory when running on the GPU).
        releasable: what evicting every cached model would give back.

    Raises:
        ModelTooLargeError: with the size and the memory available.
    """
    available = min(budget, free + releasable)
    if needed > available:
        raise ModelTooLargeError(
            f"{repo} is too large for this Space: its weights take {format_bytes(needed)} (safetensors headers) "
            f"but {format_bytes(available)} of memory is available to models here "
            f"(budget {format_bytes(budget)}, free {format_bytes(free)}); try a smaller model or run it elsewhere",
            repo_id=repo,
            needed=needed,
            available=available,
        )


def free_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes of the device's memory."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(free), int(total)
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


class ModelLoader:
    """Checks and loads Hub models (or local folders) through a `registry.hub.HubClient`."""

    def __init__(self, hub: Any, *, device: str = "auto") -> None:
        self.hub = hub
        self.device = resolve_device(device, error=SpaceError)

    def check(self, model_id: str, *, hub: Any = None) -> tuple[int, str | None]:
        """Refuse a non-Llama or non-causal-LM repo; return (weights' bytes, commit sha); no weights read.

        Args:
            model_id: `owner/name[@revision]`.
            hub: the client to read with: the visitor's (their token, or anonymous); default the loader's.

        Raises:
            HubRepoNotFoundError / HubRevisionNotFoundError: no such repo (or one `hub` cannot read) or revision.
            UnsupportedModelError: no config.json or safetensors weights, or the wrong architecture.
        """
        hub = hub or self.hub
        ref = ModelRef.parse(model_id.strip())
        repo, revision = ref.repo, ref.revision
        # repo info first: one request that fails fast (a missing or private repo, a Hub that is
        # down) where a file download would retry with backoff.
        info = hub.model_info(repo, revision=revision)
        sha = getattr(info, "sha", None) or None
        files = {s.rfilename for s in (getattr(info, "siblings", None) or [])}
        if "config.json" not in files:
            raise UnsupportedModelError(
                f"{model_id} has no config.json, so it is not a transformers model the Space can run", repo_id=repo
            )
        try:
            raw = hub.read_file(repo, "config.json", revision=sha or revision)
        except HubEntryNotFoundError as exc:
            raise UnsupportedModelError(f"{model_id}: config.json cannot be read", repo_id=repo) from exc
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise UnsupportedModelError(f"config.json of {model_id} is not valid JSON", repo_id=repo) from exc
        check_architecture(config if isinstance(config, dict) else {}, repo=model_id)
        from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

        try:
            return weights_bytes(hub.safetensors_metadata(repo, revision=sha or revision)), sha
        except (NotASafetensorsRepoError, SafetensorsParsingError) as exc:
            raise UnsupportedModelError(
                f"{model_id} has no readable safetensors weights; the Space loads safetensors only", repo_id=repo
            ) from exc

    def resolve(self, model_id: str, *, hub: Any = None) -> str:
        """`repo@sha` of a model as `hub` sees it (one request: this is the visitor's access check).

        Raises:
            HubRepoNotFoundError / HubRevisionNotFoundError: no such repo or revision, or `hub` cannot read it.
        """
        ref = ModelRef.parse(model_id.strip())
        info = (hub or self.hub).model_info(ref.repo, revision=ref.revision)
        sha = getattr(info, "sha", None)
        return str(ref.model_copy(update={"revision": sha})) if sha else str(ref)

    def load(self, model_id: str, *, nbytes: int, hub: Any = None, revision: str | None = None) -> LoadedModel:
        """Download (cached) and load a checked model onto the device."""
        ref = ModelRef.parse(model_id.strip())
        path = (hub or self.hub).snapshot(
            ref.repo, revision=revision or ref.revision, allow_patterns=list(_WANTED_FILES)
        )
        return self.load_dir(path, key=model_id, nbytes=nbytes)

    def load_dir(self, path: Path, *, key: str, nbytes: int | None = None) -> LoadedModel:
        """Load a local checkpoint folder (a merge made in the Space, say)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_architecture(json.loads((path / "config.json").read_text(encoding="utf-8")), repo=key)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
        # Inference only: no autograd state on the weights (generation also runs under inference_mode).
        # Never torch.set_grad_enabled(False): that is the calling thread's mode, not this model's.
        model = model.to(self.device).eval().requires_grad_(False)
        if nbytes is None:
            nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        context = int(getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length or 2048)
        return LoadedModel(
            key=key, model=model, tokenizer=tokenizer, nbytes=nbytes, device=self.device, context_length=context
        )


class ModelCache:
    """Loaded models, least recently used evicted first, their total size kept under `budget` bytes.

    A `cachetools.LRUCache` whose size is each model's parameter bytes (`getsizeof`), so its
    `maxsize` is the byte budget. Thread-safe: Gradio runs handlers on worker threads, so every
    access holds one lock, and two requests for the same model load it once (a lock per key while
    it loads; the others wait and then find it cached).

    Args:
        loader: checks and loads models.
        budget: bytes the cached models may take together; None: half the device's memory.
        memory: returns (free, total) bytes of the device (injectable for tests).
    """

    def __init__(
        self,
        loader: ModelLoader,
        *,
        budget: int | None = None,
        memory: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.loader = loader
        self.memory = memory or (lambda: free_memory(loader.device))
        self.budget = budget if budget is not None else self.memory()[1] // 2
        self._models: LRUCache[str, LoadedModel] = LRUCache(maxsize=self.budget, getsizeof=_model_bytes)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    @property
    def used(self) -> int:
        """Bytes of the cached models."""
        with self._lock:
            return int(self._models.currsize)

    def keys(self) -> list[str]:
        """Cached models as `repo@sha`, in the order they were loaded."""
        with self._lock:
            return list(self._models)

    def get(self, model_id: str, *, hub: Any = None) -> LoadedModel:
        """The loaded model, loading it (and evicting others) if needed.

        Every call first resolves the model's commit through `hub` (the visitor's client): a model
        cached for one visitor is served to another only if that visitor can read it too, and a push
        to the repo loads the new commit.

        Args:
            model_id: `owner/name[@revision]`.
            hub: the visitor's client (their token, or anonymous); default the loader's.

        Raises:
            ModelTooLargeError, UnsupportedModelError, Hub errors: before anything is downloaded.
        """
        key = self.loader.resolve(model_id, hub=hub)
        with self._lock:
            cached = self._models.get(key)  # a hit marks it most recently used
            if cached is not None:
                return cached
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                cached = self._models.get(key)
                if cached is not None:
                    return cached
            try:
                needed, sha = self.loader.check(key, hub=hub)
                free, _ = self.memory()
                check_fits(repo=model_id, needed=needed, budget=self.budget, free=free, releasable=self.used)
                self._make_room(needed)
                loaded = self.loader.load(key, nbytes=needed, hub=hub, revision=sha)
                with self._lock:
                    self._models[key] = loaded  # evicts the least recently used if the budget is exceeded
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            logger.info("loaded %s (%d bytes); cache holds %d models", key, needed, len(self._models))
            return loaded

    def _make_room(self, needed: int) -> None:
        """Evict least recently used models until `needed` more bytes fit, before loading (so peak memory stays bounded)."""
        with self._lock:
            while self._models and self._models.currsize + needed > self._models.maxsize:
                key, _ = self._models.popitem()
                logger.info("evicted %s from the model cache", key)
        import gc

        gc.collect()


def _model_bytes(model: LoadedModel) -> int:
    return model.nbytes
