"""What a bot job produced, as a person reads it: the merged repo, its evaluation table and the bot's
comment. `registry demo` prints it at the end and `registry bot show` on demand; both read the job as
the bot's API shows it (`GET /jobs`, `Job.public()`) and the rest from the Hub, never from the bot's
internals (`registry` never imports `bot`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from registry.cli._state import stderr_console

if TYPE_CHECKING:
    from registry.hub import HubClient


def print_job_report(job: Mapping[str, Any], hub: HubClient) -> bool:
    """Print the merged model's URL, its card's evaluation section and the bot's last comment on the CT
    repo (stdout); a job that did not publish prints its state and error (stderr).

    Returns:
        Whether the job published its merge.
    """
    if job["state"] != "published":
        reason = f": {job['error']}" if job.get("error") else ""
        stderr_console().print(f"[bold red]Job {job['id']} is {job['state']}[/]{reason}")
        return False
    typer.echo(f"Merged model: {hub.endpoint}/{job['output_repo']} (commit {str(job['output_revision'])[:7]})")
    readme = hub.read_file(job["output_repo"], "README.md", revision=job.get("output_revision")).decode()
    section = readme.partition("## Evaluation: comparison")[2].partition("\n## ")[0]
    if section:
        typer.echo("\nEvaluation (CT vs SFT vs merged):" + section.rstrip())
    elif "## Evaluation" in readme:
        typer.echo("\n" + readme.partition("## Evaluation")[2].partition("\n## ")[0].strip())
    if job.get("discussion"):
        num = int(str(job["discussion"]).rstrip("/").rsplit("/", 1)[1])
        details = hub.api.get_discussion_details(job["ct_repo"], num)
        comments = [str(getattr(event, "content", "")) for event in details.events if event.type == "comment"]
        if comments:
            typer.echo(f"\nThe bot's comment on {job['discussion']}:\n\n{comments[-1].rstrip()}")
    return True
