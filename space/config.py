"""What the Space is pointed at, and its limits: one frozen `SpaceConfig`, built from the CLI or the env.

On a Hugging Face Space there is no command line: `SpaceConfig.from_env()` reads `HF_ENDPOINT`,
`HF_TOKEN`, `MERGELING_REGISTRY`, `MERGELING_BOT_URL`, `MERGELING_SHARED_DATA` and
`MERGELING_EXAMPLES_REPO` (Space secrets and variables), so the same `app.py` runs unchanged there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from registry.hub import default_endpoint

LAB_SIZE_PARAMETERS = 50_000_000  # merges up to this size run in the Space (the lab model has 2.95 M)


@dataclass(frozen=True)
class SpaceConfig:
    """Settings of one Space process.

    Args:
        endpoint: the Hub URL (default `HF_ENDPOINT`, else huggingface.co).
        token: a Hub token (default `HF_TOKEN`): the Space reads its registry repo with it, nothing
            else (visitors' models are read with their own token, or anonymously).
        registry: the catalog dataset repo `OWNER/NAME`; None: `<token owner>/mergeling-registry`.
        bot_url: the bot's HTTP API; None: Submit says there is no bot, the rest works.
        data_dir: a folder in the `../shared/data` layout for prompt examples (FLORES / SIB text).
        examples_repo: a Hub dataset repo in the same layout (`registry hub seed-data`), used when
            `data_dir` is None.
        device: `auto` (the GPU when there is one), `cpu` or `cuda`.
        cache_bytes: memory the loaded models may take together; None: half the machine's memory
            (or of the GPU's).
        merge_max_parameters: the largest merge run in the Space; bigger ones go to the bot.
        max_new_tokens: the largest `max_new_tokens` a request may ask for.
        max_prompt_chars: the longest prompt, in characters (refused before tokenisation).
        generate_concurrency: generations running at once (more wait in Gradio's queue).
        workdir: where in-Space merges are written (None: a temporary folder per process).
        sign_in: show "Sign in with Hugging Face" (Gradio's OAuth; see `oauth_configured`).
        status_every_s: the status line (counts of CTs, SFTs, merges and the bot's jobs) refreshes this
            often on an open page (also on a tab change and after a submission).
        catalog_ttl_s: a catalog snapshot is reused this long (the Refresh buttons bypass it).
        visible_ttl_s: what one visitor (or anonymous) can read is re-listed after this long.
    """

    endpoint: str
    token: str | None = None
    registry: str | None = None
    bot_url: str | None = None
    data_dir: Path | None = None
    examples_repo: str | None = None
    device: str = "auto"
    cache_bytes: int | None = None
    merge_max_parameters: int = LAB_SIZE_PARAMETERS
    max_new_tokens: int = 256
    max_prompt_chars: int = 8_000
    generate_concurrency: int = 2
    workdir: Path | None = None
    sign_in: bool = False
    status_every_s: float = 15.0
    catalog_ttl_s: float = 15.0
    visible_ttl_s: float = 30.0

    @classmethod
    def from_env(cls, **overrides: object) -> SpaceConfig:
        """A config from the environment; keyword arguments that are not None win."""
        data = os.environ.get("MERGELING_SHARED_DATA")
        config = cls(
            endpoint=default_endpoint(),
            token=os.environ.get("HF_TOKEN") or None,
            registry=os.environ.get("MERGELING_REGISTRY") or None,
            bot_url=os.environ.get("MERGELING_BOT_URL") or None,
            data_dir=Path(data) if data else None,
            examples_repo=os.environ.get("MERGELING_EXAMPLES_REPO") or None,
            sign_in=oauth_configured(),
        )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


OAUTH_VARIABLES = ("OPENID_PROVIDER_URL", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES")


def oauth_configured() -> bool:
    """Whether Gradio's OAuth will run for real: on a Space with `hf_oauth: true` the Hub sets the four
    `OAUTH_VARIABLES` and `SYSTEM=spaces`; offline, set them for the embedded hub's provider too.

    Anything less and Gradio would install its *mocked* sign-in, which signs every visitor in as the
    owner of the Space's HF_TOKEN: then the Space shows no sign-in at all (everyone is anonymous).
    """
    import importlib.util
    import logging

    on_space = os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))
    if not (on_space and all(os.environ.get(name) for name in OAUTH_VARIABLES)):
        return False
    missing = [m for m in ("authlib", "itsdangerous") if importlib.util.find_spec(m) is None]
    if missing:
        logging.getLogger(__name__).warning(
            "sign-in is off: the OAuth variables are set but %s is not installed (pip install 'gradio[oauth]')",
            " and ".join(missing),
        )
        return False
    return True
