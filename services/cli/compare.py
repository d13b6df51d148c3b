"""The commands that read across jobs: ``compare`` (jobs side by side, rows aligned by
optimizer label) and ``history`` (one label over the caller's jobs on a data set).

``compare`` names each job by a letter (A, B, ...) above the table, with its setup; each
job is a block of columns, ``-`` where it has no row of the label (services/comparison.py).
``history`` shows as columns only the hyperparameters whose values differ between the
listed jobs (the others once, above the table): the column that explains a change of rank.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.text import Text

from services.cli.base import OK, cli, client, full_id, print_json, remote_ids, remote_options, show
from services.console import plain_table

# The score column by task: (title, key, percent?).
SCORES = {
    "classification": ("best val acc", "best_val_accuracy", True),
    "regression": ("best val R²", "best_val_accuracy", False),
    "landscape": ("final distance", "final_distance", False),
}


def _number(value: Any, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def _score(row: Mapping[str, Any], task: str) -> str:
    _, key, percent = SCORES.get(task, SCORES["classification"])
    return _number(row.get(key), "{:.2%}" if percent else "{:.4g}")


def _target(target: Mapping[str, Any]) -> str:
    metric = str(target.get("metric"))
    direction = ">=" if metric.endswith(("accuracy", "r2")) else "<="
    return f"{metric} {direction} {target.get('value')}"


def _setup(job: Mapping[str, Any]) -> str:
    model = job["model"]
    hidden = f" {model['hidden']}" if model.get("hidden") else ""
    return (
        f"{job['dataset'].get('name')}, {model.get('name')}{hidden}, {job['epochs']} epochs, "
        f"batch {job['batch_size']}, target {_target(job['target'])}"
    )


@cli.command(short_help="Jobs side by side: their summaries aligned by optimizer label.")
@click.argument("jobs", metavar="JOB JOB ...", nargs=-1, required=True)
@remote_options
def compare(jobs: Sequence[str], url: str | None, key: str | None, as_json: bool) -> int:
    """The summaries of JOBs (ids or unique prefixes, up to 8), one row per optimizer label
    and a block of columns per job (score, final train loss, steps to target, reached, rank;
    '-' where a job has no such label), each job's setup above, and the setup keys that
    differ between them (--json: the API's answer)."""
    with client(url, key) as api:
        ids: list[str] = []
        known: list[str] | None = None

        def listed() -> list[str]:
            nonlocal known
            if known is None:  # one listing for every prefix
                known = list(remote_ids(api))
            return known

        for job in jobs:
            ids.append(full_id(job, listed))
        result = api.compare(ids)
    if as_json:
        print_json(result)
    else:
        show(comparison_table(result))
    return OK


def comparison_table(result: Mapping[str, Any]) -> RenderableType:
    """A line per job (its letter, id, name, status and setup), the keys that differ, then the
    aligned table."""
    jobs = result["jobs"]
    letters = string.ascii_uppercase
    lines: list[RenderableType] = []
    for letter, job in zip(letters, jobs, strict=False):
        state = "" if job["finished"] else ": not finished, ranks so far"
        lines.append(
            Text(f"{letter}: {job['id']} {job['name']} [{job['status']}{state}]: {_setup(job)}")
        )
    differs = result.get("differs") or []
    lines.append(
        Text(
            f"differs: {', '.join(differs)} (not comparable as they stand)"
            if differs
            else "same setup in every job"
        )
    )
    block = ("{score}", "final train loss", "steps to target", "reached", "rank")
    columns = ["optimizer"]
    for letter, job in zip(letters, jobs, strict=False):
        title = SCORES.get(job["task"], SCORES["classification"])[0]
        columns += [f"{letter} {name.format(score=title)}" for name in block]
    table = plain_table(*columns, right=columns[1:])
    for row in result["rows"]:
        cells = [row["label"]]
        for job, cell in zip(jobs, row["cells"], strict=True):
            if cell is None:
                cells += ["-"] * len(block)
                continue
            cells += [
                _score(cell, job["task"]),
                _number(cell.get("final_train_loss"), "{:.4f}"),
                _number(cell.get("steps_to_target"), "{:.0f}"),
                str(cell.get("target_reached", "-")),
                _number(cell.get("rank"), "{}"),
            ]
        table.add_row(*cells)
    return Group(*lines, table)


@cli.command(short_help="One optimizer label's results over your jobs on a data set.")
@click.argument("label", metavar="LABEL")
@click.option(
    "--dataset", required=True, help="A catalog data set (e.g. digits) or an uploaded one's id."
)
@click.option("--model", help="Only jobs of this model (the spec's model.name).")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=200, show_default=True, help="Newest jobs."
)
@remote_options
def history(
    label: str,
    dataset: str,
    model: str | None,
    limit: int,
    url: str | None,
    key: str | None,
    as_json: bool,
) -> int:
    """LABEL's summary row in each of your succeeded jobs on the data set, newest first (job,
    date, model, epochs, the hyperparameters that differ, score, final train loss, steps to
    target, reached, rank), then the median, min and max over them and how often LABEL
    ranked first (--json: the API's answer)."""
    with client(url, key) as api:
        result = api.history(label, dataset, model=model, limit=limit)
    if as_json:
        print_json(result)
    else:
        show(history_table(result))
    return OK


def _compact(value: Any) -> str:
    return (
        json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)
    )


def history_table(result: Mapping[str, Any]) -> RenderableType:
    items = result["items"]
    where = f"{result['dataset']}" + (f", model {result['model']}" if result.get("model") else "")
    if not items:
        return Text(f"{result['label']} on {where}: no succeeded job of yours trained it")
    settings = [item.get("hyperparameters") or {} for item in items]
    names = sorted({name for setting in settings for name in setting})
    varying = [n for n in names if len({_compact(s.get(n)) for s in settings}) > 1]
    fixed = [n for n in names if n not in varying]
    task = items[0]["task"]
    score_title = SCORES.get(task, SCORES["classification"])[0]
    columns = ("job", "created (UTC)", "model", "epochs", *varying, score_title)
    columns += ("final train loss", "steps to target", "reached", "rank")
    table = plain_table(*columns, right=[c for c in columns if c not in ("job", "model")])
    for item, setting in zip(items, settings, strict=True):
        row = item["row"]
        rank = "-" if row.get("rank") is None else f"{row['rank']}/{item['labels']}"
        table.add_row(
            str(item["job_id"])[:8],
            str(item["created_at"])[:16].replace("T", " "),
            str(item["model"].get("name")),
            str(item["epochs"]),
            *(_compact(setting.get(n, "-")) for n in varying),
            _score(row, item["task"]),
            _number(row.get("final_train_loss"), "{:.4f}"),
            _number(row.get("steps_to_target"), "{:.0f}"),
            str(row.get("target_reached", "-")),
            rank,
        )
    aggregate = result["aggregate"]
    share = aggregate.get("first_share")
    head = [
        Text(
            f"{result['label']} on {where}: {aggregate['jobs']} succeeded "
            f"job{'' if aggregate['jobs'] == 1 else 's'}, newest first"
        ),
    ]
    if fixed:
        same = ", ".join(f"{n}={_compact(settings[0].get(n))}" for n in fixed)
        head.append(Text(f"the same in every job: {same}"))
    ranked = f"ranked first in {aggregate['ranked_first']} of {aggregate['ranked']}" + (
        f" ({share:.0%})" if share is not None else ""
    )
    rate = aggregate.get("mean_success_rate")
    summary = plain_table(
        "over the jobs", "median", "min", "max", "n", right=("median", "min", "max", "n")
    )
    for name, stat in aggregate["metrics"].items():
        if stat["n"]:
            summary.add_row(
                name, *(_number(stat[k]) for k in ("median", "min", "max")), str(stat["n"])
            )
    tail: list[RenderableType] = [Text(f"{ranked}; mean success rate {_number(rate, '{:.0%}')}")]
    if summary.row_count:
        tail.append(summary)
    if result.get("truncated"):
        tail.append(Text("(more jobs match: raise --limit)"))
    return Group(*head, table, *tail)
