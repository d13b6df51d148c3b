"""The commands that write a job's results out: report (HTML) and export (the series).

``export`` decisions: the format string goes straight to ``services.export.export_series``
(click checks it is one of ``FORMATS``). Where it writes depends on the format:

- csv, json: ``-o FILE``, else standard output; parquet: ``-o FILE``, else standard output
  only when that is not a terminal (it is binary);
- tensorboard: ``-o DIR`` is required (event files, one sub-directory per run);
- mlflow: ``-o URI``, a tracking URI, else ``MLFLOW_TRACKING_URI``; one of them is required.

A missing destination is a usage mistake (exit status 2) naming what to pass. The one-line
confirmation (what was written where) goes to standard error, so that standard output holds
only the data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import click

from services.cli.base import (
    OK,
    CliError,
    cli,
    client,
    full_id,
    job_argument,
    local_ids,
    remote_ids,
)

FORMATS = ("csv", "json", "parquet", "tensorboard", "mlflow")
# What export_series counts, per format (its return value).
UNITS = {
    "csv": "rows",
    "json": "series points",
    "parquet": "rows",
    "tensorboard": "scalars",
    "mlflow": "metric values",
}


@cli.command(short_help="Write a job's self-contained HTML report.")
@job_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file (default: optbench-report-<job>.html here).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--url", help="Fetch it from this API (default: read the configured database).")
@click.option("--key", help="API key for --url (default: OPTBENCH_API_KEY).")
def report(job: str, output: Path | None, force: bool, url: str | None, key: str | None) -> int:
    """Write JOB's report: one HTML file with its charts and tables, no network needed to
    open it. An existing file is kept unless --force."""
    if url:
        with client(url, key) as api:
            job_id = full_id(job, lambda: remote_ids(api))
            target = _report_file(output, force, job_id)
            html = api.report(job_id)
    else:
        from services.report import render_report

        job_id = full_id(job, local_ids)
        target = _report_file(output, force, job_id)
        html = render_report(job_id)
    target.write_text(html, encoding="utf-8")
    print(f"wrote {target} ({len(html) // 1024} KiB): open it in a browser, no network needed")
    return OK


def _report_file(output: Path | None, force: bool, job_id: str) -> Path:
    """Where ``report`` writes: ``-o``, or a file named after the job; never over a file that
    exists unless ``--force``."""
    target = output or Path(f"optbench-report-{job_id}.html")
    if target.exists() and not force:
        raise CliError(f"{target} exists: pass --force to overwrite it, or -o another file")
    return target


@cli.command(short_help="Dump a job's step and epoch series.")
@job_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="csv",
    show_default=True,
    help="csv, json, parquet: a file; tensorboard: event files in a directory; mlflow: runs "
    "in an MLflow tracking server.",
)
@click.option(
    "-o",
    "--output",
    metavar="DEST",
    help="csv/json/parquet: FILE (default: standard output); tensorboard: DIR (required); "
    "mlflow: tracking URI (default: MLFLOW_TRACKING_URI).",
)
def export(job: str, fmt: str, output: str | None) -> int:
    """Dump JOB's recorded series from the configured database (services/export.py says
    what each format holds)."""
    from services.export import export_series

    out, where = _destination(fmt, output)
    count = export_series(full_id(job, local_ids), fmt, out)
    print(f"wrote {count} {UNITS[fmt]} as {fmt} to {where}", file=sys.stderr)
    return OK


def _destination(fmt: str, output: str | None) -> tuple[IO[Any] | str | Path, str]:
    """What ``export_series`` writes to for ``fmt``, and how the confirmation names it."""
    if fmt == "tensorboard":
        if not output:
            raise CliError("tensorboard writes a directory of event files: pass -o DIR")
        return Path(output), f"{output} (tensorboard --logdir {output})"
    if fmt == "mlflow":
        uri = output or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise CliError(
                "mlflow needs a tracking URI: pass -o URI (e.g. -o sqlite:///mlflow.db or "
                "-o http://127.0.0.1:5000) or set MLFLOW_TRACKING_URI"
            )
        return uri, f"MLflow at {_without_password(uri)}"
    if output:
        return Path(output), output
    if fmt == "parquet":
        if sys.stdout.isatty():
            raise CliError("parquet is binary: pass -o FILE")
        return sys.stdout.buffer, "standard output"
    return sys.stdout, "standard output"


def _without_password(uri: str) -> str:
    """``uri`` with any password in it masked: the confirmation may end up in a log."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
