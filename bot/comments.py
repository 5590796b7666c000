"""The bot's discussion on a CT repo: one discussion per repo, opened by the bot, a comment per job.

Comments carry the merged repo, a results table (CT vs SFT vs merge, differences to the CT) or, on
failure, the one-line reason with the fix (and each pair's reasons when no SFT was compatible).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.queue import Job
    from registry.evaluate.records import EvalRecord
    from registry.hub import HubClient

log = logging.getLogger(__name__)

TITLE = "Mergeling bot: merges of this checkpoint"


def find_or_open(hub: HubClient, repo: str, *, bot_user: str) -> int:
    """The number of the bot's discussion on `repo` (opened when missing)."""
    for discussion in hub.list_discussions(repo, author=bot_user):
        if discussion.title == TITLE and not discussion.is_pull_request:
            return int(discussion.num)
    return int(
        hub.create_discussion(
            repo,
            title=TITLE,
            description=(
                "This discussion is kept by the Mergeling merge bot: each new revision of this CT checkpoint is "
                "merged with the compatible English SFT checkpoints of the registry, and the results are posted here."
            ),
        )
    )


def success_comment(
    job: Job, *, url: str, commit: str, records: dict[str, EvalRecord], unavailable: str | None, extra: str = ""
) -> str:
    sha = (job.ct_sha or "")[:7]
    lines = [
        f"### Merged revision `{sha}` → [{job.output_repo}]({url}) (commit `{commit[:7]}`)",
        "",
        f"Merged `{job.ct_repo}@{sha}` with `{job.sft_repo}@{(job.sft_sha or '')[:7]}` "
        f"({job.kind}, recipe `{job.spec.recipe_source}`, job `{job.id}`).",
        "",
    ]
    if unavailable:
        from registry.card import describe_unavailable

        lines.append(describe_unavailable(unavailable))
    elif records:
        from registry.card import comparison_markdown

        table = comparison_markdown([(label, records[label]) for label in ("ct", "sft", "merge") if label in records])
        lines += ["Results (differences in brackets are to the CT):", "", table]
    if extra:
        lines += ["", extra]
    return "\n".join(lines).rstrip() + "\n"


def failure_comment(job: Job, error: str, reasons: Sequence[str] = ()) -> str:
    sha = (job.ct_sha or "")[:7]
    target = f" with `{job.sft_repo}`" if job.sft_repo else ""
    lines = [
        f"### Revision `{sha}` was not merged{target}",
        "",
        f"**Reason and fix:** {error}",
    ]
    if reasons:
        lines += ["", "Pairs checked (`registry pairs`):", *[f"- {reason}" for reason in reasons]]
    lines += ["", f"Job `{job.id}`; push a fixed revision and the bot tries again."]
    return "\n".join(lines) + "\n"


def post(hub: HubClient, repo: str, text: str, *, bot_user: str, marker: str | None = None) -> tuple[int, str]:
    """Comment on the bot's discussion of `repo` (once per `marker`); return its number and web URL.

    A comment carries `marker` (the job id) hidden; when a resumed job finds it already posted
    (it crashed after commenting), it does not post again.
    """
    num = find_or_open(hub, repo, bot_user=bot_user)
    tag = f"<!-- mergeling-job: {marker} -->" if marker else None
    if tag is None or not _already_posted(hub, repo, num, tag):
        hub.comment_discussion(repo, num, f"{text.rstrip()}\n\n{tag}\n" if tag else text)
    return num, f"{hub.endpoint}/{repo}/discussions/{num}"


def _already_posted(hub: HubClient, repo: str, num: int, tag: str) -> bool:
    try:
        details = hub.api.get_discussion_details(repo, num)
    except Exception:  # noqa: BLE001 (cannot tell: post; a duplicate beats a missing comment)
        log.debug("could not read discussion %s#%d", repo, num, exc_info=True)
        return False
    return any(tag in (getattr(event, "content", "") or "") for event in details.events)
