"""``optbench suite``: run a suite and read its scores (services/suite/).

    optbench suite lecture        the built-in suite (LECTURE_SUITE)
    optbench suite run FILE       a suite spec file (JSON or YAML)
    optbench suite scores SUITE   the score table of a suite (--json: the whole document)
    optbench suite report SUITE   write its HTML report (-o FILE)

``lecture`` and ``run`` without ``--url`` (and without OPTBENCH_API_URL set) run on the
embedded default the way ``optbench demo`` does: the API and ``--workers`` Celery workers as
child processes on SQLite and the filesystem broker, the suite submitted over HTTP, progress
on standard error, then the score table and where the report is. With ``--url`` they submit
to that API and follow the suite there. ``--epochs``, ``--trials``, ``--studies`` and
``--reruns`` shrink the budget for a quick look (services/spec/suite.py ``shrunk``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.text import Text

from services.cli.base import (
    JOB_FAILED,
    OK,
    CliError,
    SpecError,
    cli,
    client,
    json_option,
    no_color_option,
    print_json,
    show,
)
from services.client import ApiClient
from services.console import plain_table
from services.settings import get_settings
from services.spec.suite import LECTURE_SUITE, SuiteSpec, shrunk
from services.spec.validation import field_errors

FINISHED = ("succeeded", "failed", "cancelled")


@cli.group(short_help="Suites: one optimizer set over many workloads, AlgoPerf scores.")
def suite() -> None:
    """Run a suite (one tuning study per workload and study) and read its scores: the
    performance profile's score, the geometric-mean speedup and DeepOBS speed."""


def _budget_options(command: Any) -> Any:
    for option in reversed(
        (
            click.option("--epochs", type=click.IntRange(min=1), help="At most this many epochs."),
            click.option("--trials", type=click.IntRange(1, 512), help="Trials per optimizer."),
            click.option("--studies", type=click.IntRange(1, 10), help="Studies per workload."),
            click.option("--reruns", type=click.IntRange(1, 32), help="Rerun seeds per study."),
            click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True,
                         help="Worker processes on the embedded default."),
            click.option("--url", help="An API to submit to (default: the embedded default; "
                         "OPTBENCH_API_URL counts as --url)."),
            click.option("--key", help="API key (default: OPTBENCH_API_KEY)."),
            click.option("-o", "--report", "report_path", type=click.Path(dir_okay=False,
                         path_type=Path), help="Also write the HTML report to this file."),
            json_option,
            no_color_option,
        )
    ):  # fmt: skip
        command = option(command)
    return command


@suite.command(short_help="The built-in suite: 8 optimizers on 6 workloads.")
@_budget_options
def lecture(**options: Any) -> int:
    """The built-in suite (the lecture's eight optimizers, each learning rate tuned, on six
    small workloads): on the embedded default, or on --url's API. README, "Suites"."""
    return _run(LECTURE_SUITE, **options)


@suite.command("run", short_help="Run a suite spec file (JSON or YAML).")
@click.argument("spec_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@_budget_options
def run_file(spec_file: Path, **options: Any) -> int:
    """Run the suite spec in FILE (services/spec/suite.py) like ``optbench suite lecture``."""
    try:
        text = spec_file.read_text()
    except OSError as error:
        raise CliError(f"cannot read suite file {spec_file}: {error.strerror}") from None
    try:
        data = json.loads(text) if spec_file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{spec_file} is not valid JSON/YAML: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{spec_file}: a suite spec is a mapping (JSON object)")
    return _run(data, **options)


@suite.command(short_help="A suite's score table.")
@click.argument("suite_id", metavar="SUITE")
@click.option("--url", help="The API (default: OPTBENCH_API_URL or http://127.0.0.1:8000).")
@click.option("--key", help="API key (default: OPTBENCH_API_KEY).")
@json_option
@no_color_option
def scores(suite_id: str, url: str | None, key: str | None, as_json: bool) -> int:
    """The score table of SUITE (rank, score, speedup, workloads solved) and every t(s, w);
    --json prints the whole scores document (GET /v1/suites/{id}/scores)."""
    with client(url, key) as api:
        document = api.suite_scores(suite_id)
    if as_json:
        print_json(document)
    else:
        show(score_table(document))
    return OK


@suite.command(short_help="Write a suite's HTML report.")
@click.argument("suite_id", metavar="SUITE")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--url", help="The API (default: OPTBENCH_API_URL or http://127.0.0.1:8000).")
@click.option("--key", help="API key (default: OPTBENCH_API_KEY).")
def report(suite_id: str, output: Path, url: str | None, key: str | None) -> int:
    """Write the self-contained HTML report of SUITE to OUTPUT."""
    with client(url, key) as api:
        output.write_text(api.suite_report(suite_id))
    print(f"wrote {output}")
    return OK


def _number(value: Any, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def score_table(document: Mapping[str, Any]) -> RenderableType:
    """The ranked score table, then t(s, w) per workload (∞: a miss) with r in brackets."""
    unit = "steps" if document["time_measure"] == "steps" else "s"
    table = plain_table(
        "rank", "optimizer", "score", "speedup", "solved", right=["score", "speedup", "solved"]
    )
    for row in document["table"]:
        table.add_row(
            str(row["rank"]),
            row["optimizer"],
            f"{row['score']:.3f}",
            _number(row["geomean_speedup"], "{:.3f}"),
            f"{row['solved']}/{row['workloads']}",
        )
    names = [w["name"] for w in document["workloads"]]
    times = plain_table("optimizer", *names, right=names)
    cells = {(c["optimizer"], c["workload"]): c for c in document["cells"]}
    for label in document["optimizers"]:
        values = []
        for name in names:
            c = cells[label, name]
            values.append("∞" if c["t"] is None else f"{c['t']:.4g} ({c['r']:.2f})")
        times.add_row(label, *values)
    head = (
        f"{document['name']}: {document['status']}; time measure {document['time_measure']}, "
        f"r_max {document['r_max']:g}, speedup against {document['reference']} "
        "(t / t_ref, geometric mean; below 1 is faster)"
    )
    return Group(Text(head), table, Text(f"\ntime to target in {unit} (r = t / best t):"), times)


def _spec(data: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    spec = shrunk(
        dict(data),
        epochs=options["epochs"],
        trials=options["trials"],
        studies=options["studies"],
        rerun_seeds=options["reruns"],
    )
    try:
        SuiteSpec.model_validate(spec)
    except ValidationError as error:
        raise SpecError("; ".join(map(str, field_errors(error.errors())))) from None
    return spec


def _run(data: Mapping[str, Any], **options: Any) -> int:
    spec = _spec(data, options)
    url = options["url"] or os.environ.get("OPTBENCH_API_URL")
    key = options["key"] or get_settings().api_key.get_secret_value() or None
    started = time.monotonic()
    if url:
        with ApiClient(url, api_key=key) as api:
            document = _submit_and_follow(api, spec, options)
    else:
        document = _embedded(spec, key, options)
    elapsed = time.monotonic() - started
    if options["as_json"]:
        print_json({**document, "wall_seconds": elapsed})
    else:
        show(score_table(document))
        where = url or "http://127.0.0.1:8000 (after `optbench api`)"
        print(
            f"\nsuite {document['suite_id']}: {document['status']} in {elapsed:.0f} s wall. "
            f"Report: {where}/v1/suites/{document['suite_id']}/report, or "
            f"`optbench suite report {document['suite_id']} -o suite.html`"
            + (f"; written to {options['report_path']}" if options["report_path"] else "")
        )
    return OK if document["status"] == "succeeded" else JOB_FAILED


def _submit_and_follow(api: ApiClient, spec: dict[str, Any], options: Mapping[str, Any]) -> Any:
    created = api.submit_suite(spec)
    suite_id = created["id"]
    print(
        f"submitted suite {suite_id}: {created['name']} ({len(created['jobs'])} tuning studies)",
        file=sys.stderr,
    )
    shown = None
    while True:
        state = api.suite(suite_id)
        done = sum(job["status"] in FINISHED for job in state["jobs"])
        running = [
            f"{job['workload']}/{job['study']}" for job in state["jobs"]
            if job["status"] == "running"
        ]  # fmt: skip
        line = f"suite: {done}/{len(state['jobs'])} studies done" + (
            f", training {', '.join(running)}" if running else ""
        )
        if line != shown:
            print(line, file=sys.stderr)
            shown = line
        if state["status"] in FINISHED:
            break
        time.sleep(1.0)
    if options["report_path"]:
        options["report_path"].write_text(api.suite_report(suite_id))
    return api.suite_scores(suite_id)


@contextmanager
def _embedded_api(key: str | None, workers: int) -> Iterator[ApiClient]:
    from services.children import Children, wait_until_up
    from services.db.migrate import upgrade
    from services.support import free_port

    upgrade()
    port = free_port()
    with ExitStack() as stack:
        print(
            f"starting the API and {workers} worker(s) (embedded default: SQLite + filesystem "
            "broker)",
            file=sys.stderr,
        )
        children = stack.enter_context(Children())
        api = children.start("api", "--port", str(port), "--log-level", "warning")
        for _ in range(workers):
            children.start("worker", "--log-level", "WARNING")
        http = stack.enter_context(ApiClient(f"http://127.0.0.1:{port}", api_key=key))
        wait_until_up(http, api)
        yield http


def _embedded(spec: dict[str, Any], key: str | None, options: Mapping[str, Any]) -> Any:
    if get_settings().auth == "required" and key is None:
        raise CliError(
            "OPTBENCH_AUTH=required and no OPTBENCH_API_KEY: create a key with `optbench keys "
            "create --owner NAME` and set OPTBENCH_API_KEY, or leave OPTBENCH_AUTH at loopback"
        )
    with _embedded_api(key, options["workers"]) as api:
        return _submit_and_follow(api, spec, options)
