"""The commands that talk to the API: submit, list, status, cancel, delete, watch, summary,
trials.

``list`` decisions: ``--name`` (substring), ``--dataset`` and ``--model`` (the spec's
``dataset.name`` / ``model.name``, any case, whole names) are matched here, on the pages the
API sends (its ``GET /v1/jobs`` filters by status only), going through pages until
``--limit`` jobs match. There is no "best optimizer" column: the rank-1 row is in each job's
summary, one more request per listed job; ``optbench summary JOB`` shows it.

``trials`` reads every page of ``GET /v1/jobs/{id}/trials`` (a study has at most a few
thousand trials) and prints one row per trial, its sampled values as columns (the union of
the entries' searched keys; ``-`` where an entry does not search that key); ``--csv`` prints
the API's CSV as it comes, ``--json`` the trials as one JSON page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.text import Text

from services.cli.base import (
    JOB_FAILED,
    OK,
    cli,
    client,
    full_id,
    job_argument,
    load_spec,
    print_json,
    remote_ids,
    remote_jobs,
    remote_options,
    show,
)
from services.cli.progress import JobProgress
from services.client import ApiClient
from services.console import (
    job_status,
    job_table,
    make_console,
    plain_table,
    summary_table,
)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
spec_argument = click.argument(
    "spec", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path)
)


@cli.command(short_help="Submit a spec file (JSON or YAML) to the API.")
@spec_argument
@click.option("--watch", is_flag=True, help="Then watch it to the end (live progress).")
@remote_options
def submit(spec: Path, watch: bool, url: str | None, key: str | None, as_json: bool) -> int:
    """Submit the job spec in SPEC (JSON or YAML) to the API; with --watch, follow it to the
    end and print the summary."""
    job_spec = load_spec(spec)
    with client(url, key) as api:
        job = api.submit(job_spec.model_dump(mode="json", exclude_unset=True))
        if watch:
            return watch_job(api, job["id"], as_json)
    if as_json:
        print_json(job)
    else:
        print(f"submitted job {job['id']} ({len(job['runs'])} runs): optbench watch {job['id']}")
    return OK


@cli.command("list", short_help="Your jobs, newest first.")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs in this status.")
@click.option("--name", help="Only jobs whose name contains this (any case).")
@click.option("--dataset", help="Only jobs on this data set (the spec's dataset.name).")
@click.option("--model", help="Only jobs of this model (the spec's model.name).")
@click.option(
    "--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="At most this many."
)
@remote_options
def list_jobs(
    status: str | None,
    name: str | None,
    dataset: str | None,
    model: str | None,
    limit: int,
    url: str | None,
    key: str | None,
    as_json: bool,
) -> int:
    """Your jobs, newest first: id prefix, name, status, data set, model, progress and
    duration (--json: the API's job objects as a JSON array)."""
    wanted = {"name": name, "dataset": dataset, "model": model}
    with client(url, key) as api:
        if any(wanted.values()):
            matching = (job for job in remote_jobs(api, status) if matches(job, **wanted))
            items = list(islice(matching, limit + 1))  # one more tells whether there are more
            total = len(items) if len(items) <= limit else None
            items = items[:limit]
        else:
            page = api.jobs(status=status, limit=limit)
            items, total = page["items"], page["total"]
    if as_json:
        print_json(items)
    else:
        show(job_table(items, len(items), total))
    return OK


def matches(
    job: Mapping[str, Any], *, name: str | None, dataset: str | None, model: str | None
) -> bool:
    """Whether the job passes ``list``'s filters (None: any)."""
    spec = job.get("spec", {})

    def same(wanted: str | None, part: str) -> bool:
        return wanted is None or wanted.lower() == str(spec.get(part, {}).get("name")).lower()

    return (name is None or name.lower() in job["name"].lower()) and (
        same(dataset, "dataset") and same(model, "model")
    )


@cli.command(short_help="A job's status and per-run progress.")
@job_argument
@remote_options
def status(job: str, url: str | None, key: str | None, as_json: bool) -> int:
    """JOB's status, and each run's progress."""
    with client(url, key) as api:
        state = api.job(full_id(job, lambda: remote_ids(api)))
    _print_job(state, as_json)
    return OK


@cli.command(short_help="Cancel a queued or running job (stored steps stay).")
@job_argument
@remote_options
def cancel(job: str, url: str | None, key: str | None, as_json: bool) -> int:
    """Cancel JOB if it is queued or running; the steps it stored stay."""
    with client(url, key) as api:
        state = api.cancel(full_id(job, lambda: remote_ids(api)))
    _print_job(state, as_json)
    return OK


@cli.command(short_help="Delete a finished job and its runs, metrics and checkpoints.")
@job_argument
@remote_options
def delete(job: str, url: str | None, key: str | None, as_json: bool) -> int:
    """Delete JOB (succeeded, failed or cancelled) with its runs, step and epoch metrics and
    checkpoints, for good. A queued or running job is refused: cancel it first (exit 1)."""
    with client(url, key) as api:
        deleted = api.delete(full_id(job, lambda: remote_ids(api)))
    if as_json:
        print_json(deleted)
    else:
        rows = deleted["deleted"]
        print(
            f"deleted job {deleted['id']}: {rows['runs']} runs, {rows['step_rows']} step rows, "
            f"{rows['epoch_rows']} epoch rows, {rows['checkpoints']} checkpoints"
        )
    return OK


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
        return
    console = make_console()
    console.print(job_status(job, color=console.color_system is not None))


@cli.command(short_help="Live progress per optimizer, then the summary.")
@job_argument
@remote_options
def watch(job: str, url: str | None, key: str | None, as_json: bool) -> int:
    """Follow JOB to its end: one bar per optimizer label (its seeds combined) with rate and
    ETA, and an overall bar; then the summary table. Exit status 1 if the job did not
    succeed."""
    with client(url, key) as api:
        return watch_job(api, full_id(job, lambda: remote_ids(api)), as_json)


def watch_job(api: ApiClient, job_id: str, as_json: bool) -> int:
    if as_json:  # a script wants the result only
        job = api.wait(job_id, on_update=lambda state: None)
    else:
        with JobProgress() as progress:
            job = api.wait(job_id, on_update=progress.update)
    summary = api.summary(job_id)
    if as_json:
        print_json(
            {"job_id": job_id, "status": job["status"], "error": job["error"], "summary": summary}
        )
    else:
        print(f"job {job_id}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
        show(summary_table(summary))
    return OK if job["status"] == "succeeded" else JOB_FAILED


@cli.command(short_help="The per-optimizer summary table.")
@job_argument
@remote_options
def summary(job: str, url: str | None, key: str | None, as_json: bool) -> int:
    """JOB's summary: one row per optimizer label over its seeds."""
    with client(url, key) as api:
        result = api.summary(full_id(job, lambda: remote_ids(api)))
    if as_json:
        print_json(result)
    else:
        show(summary_table(result))
    return OK


TRIALS_PAGE = 1000  # trials per request while reading every page


@cli.command(short_help="A tuning study's trials: values, score, status, rung.")
@job_argument
@click.option("--csv", "as_csv", is_flag=True, help="The API's CSV (one row per trial).")
@remote_options
def trials(job: str, as_csv: bool, url: str | None, key: str | None, as_json: bool) -> int:
    """JOB's trials (a job with a tuning block), in the spec's entry order: each trial's
    sampled values, selection score, status (completed, pruned, diverged, running, queued),
    the rung that pruned it and the steps it trained."""
    with client(url, key) as api:
        job_id = full_id(job, lambda: remote_ids(api))
        if as_csv:
            print(api.trials_csv(job_id), end="")
            return OK
        page = all_trials(api, job_id)
    if as_json:
        print_json(page)
    else:
        show(trials_table(page))
    return OK


def all_trials(api: ApiClient, job_id: str) -> dict[str, Any]:
    """Every trial of the study, as one page (the first page's fields, all the items)."""
    page = api.trials(job_id, limit=TRIALS_PAGE)
    items = list(page["items"])
    while len(items) < page["total"]:
        more = api.trials(job_id, limit=TRIALS_PAGE, offset=len(items))["items"]
        if not more:  # trials cannot vanish, but never loop on an empty page
            break
        items += more
    return {**page, "items": items, "limit": None, "offset": 0}


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(page: Mapping[str, Any]) -> RenderableType:
    """A heading (selection metric and its direction, sampler, count), then one row per
    trial; the score is a percentage for accuracies, else 4 significant digits."""
    keys: list[str] = []
    for searched in page.get("searched", {}).values():
        keys += [k for k in searched if k not in keys]
    metric = str(page.get("selection_metric"))
    percent = metric.endswith("accuracy")
    columns: Sequence[str] = ("label", "trial", *keys, "score", "status", "rung", "steps")
    table = plain_table(*columns, right=[c for c in columns if c not in ("label", "status")])
    for trial in page.get("items", []):
        score = trial.get("selection_score")
        table.add_row(
            trial["label"],
            str(trial["trial"]),
            *(_value(trial["values"].get(k)) for k in keys),
            "-" if score is None else (f"{score:.2%}" if percent else f"{score:.4g}"),
            trial["status"],
            _value(trial.get("rung")),
            f"{trial['steps_trained']}/{_value(trial.get('total_steps'))}",
        )
    better = "higher" if page.get("higher_is_better") else "lower"
    heading = (
        f"{page.get('total', 0)} trials, sampler {page.get('sampler')}; "
        f"score: {metric} at its best epoch ({better} is better)"
    )
    return Group(Text(heading), table)
