"""The ``optbench`` command.

    optbench demo            the lecture comparison on the embedded default (API + one worker)
    optbench run SPEC        run a spec file (JSON or YAML) in this process, print the table
    optbench api             serve the HTTP API
    optbench worker          start a Celery worker
    optbench migrate         apply database migrations
    optbench submit SPEC     submit a spec to the API (--watch to follow it)
    optbench list            your jobs, newest first (--status, --name, --limit, --json)
    optbench status JOB      a job's status and per-run progress
    optbench cancel JOB      cancel a queued or running job
    optbench watch JOB       live progress bars per run, then the summary
    optbench summary JOB     the per-optimizer table
    optbench report JOB      write the HTML report (-o FILE)
    optbench export JOB      dump the series (--format csv|json|parquet, -o FILE)
    optbench keys create --owner NAME | list | revoke ID    API keys (printed once)
    optbench reconcile       send queued jobs the broker does not hold, and runs whose worker
                             vanished or whose message was lost (the API does it too)

Exit status: 0 done; 1 the job failed, no such job (or key), or the API refused the
operation (a conflict, a missing or wrong key); 2 a usage mistake (arguments, an unreadable
file, a file that exists where ``report`` would write); 3 the API cannot be reached or is
unavailable; 4 invalid input (a spec that is not JSON/YAML or fails validation, here or in
the API; a value the service refuses).

``--url`` (or OPTBENCH_API_URL) points submit/status/watch/summary (and report) at a remote
API, ``--key`` (or OPTBENCH_API_KEY) is the API key they send; ``--json`` prints JSON.
``keys``, ``run``, ``export`` and ``report`` without ``--url`` work on the configured
database directly: whoever can run them there is an operator, not an API caller.

This is the one place that joins services and workers: it imports ``workers`` (and so torch)
only inside the commands that train.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.client import ApiClient, ApiError
from services.console import ProgressLine, RunBoard, job_status, job_table, summary_table
from services.errors import NotFound, OptbenchError
from services.settings import get_settings
from services.spec import JobSpec, field_errors

# Exit statuses (documented in the module docstring and README).
OK, JOB_FAILED, USAGE, UNREACHABLE, INVALID_SPEC = 0, 1, 2, 3, 4


class CliError(Exception):
    """A usage mistake: printed as one line, exit status 2."""


class SpecError(CliError):
    """A spec that is not JSON/YAML or does not validate: exit status 4."""


def exit_status(error: Exception) -> int:
    """The exit status a failed command returns for ``error``."""
    from services.errors import InvalidSpec, Unavailable

    if isinstance(error, SpecError | InvalidSpec):
        return INVALID_SPEC
    if isinstance(error, CliError):
        return USAGE
    if isinstance(error, ApiError):
        if error.status is None or error.status >= 500:
            return UNREACHABLE
        return INVALID_SPEC if error.status == 422 else JOB_FAILED
    return UNREACHABLE if isinstance(error, Unavailable) else JOB_FAILED  # NotFound, Conflict


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    from services.db.migrate import upgrade

    url = get_settings().resolved_database_url
    upgrade()
    print(f"database {_redacted(url)} is at the newest schema")
    return 0


def _migrate_if_embedded() -> None:
    # The embedded SQLite file is created on first use; a cluster migrates once, explicitly.
    if get_settings().is_embedded:
        from services.db.migrate import upgrade

        upgrade()


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    _migrate_if_embedded()
    uvicorn.run(
        "services.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    return 0


def _count(least: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number >= {least}")
        return value

    return parse


def _parts(text: str) -> str:
    return text if text == "auto" else str(_count(1)(text))


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker of ``--concurrency`` processes (default: one per CPU core). Each job is
    split into parts that these processes train at once, each part with its own torch thread
    count (workers/parts.py; docs/cluster.md, "Parallel parts and threads")."""
    import os

    # Before torch loads (the tasks import it): the children inherit the environment.
    if args.threads is not None:
        os.environ["OPTBENCH_TORCH_THREADS"] = str(args.threads)
    if args.parts is not None:
        os.environ["OPTBENCH_JOB_PARTS"] = args.parts
    get_settings.cache_clear()
    from workers.celery_app import app
    from workers.parts import cpu_cores

    concurrency = args.concurrency or get_settings().worker_concurrency or cpu_cores()
    app.worker_main(
        [
            "worker",
            f"--loglevel={args.log_level}",
            f"--concurrency={concurrency}",
            f"--pool={args.pool}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def load_spec(path: Path) -> JobSpec:
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"cannot read spec file {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{path} is not valid JSON/YAML: {error}") from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(map(str, field_errors(error.errors())))
        raise SpecError(f"{path}: {problems}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from services import jobs
    from services.db import store
    from services.db.session import unit_of_work
    from workers.engine import Hooks
    from workers.execution import execute_job

    spec = load_spec(args.spec)
    _migrate_if_embedded()
    with unit_of_work() as session:
        job_id = store.create_job(session, spec).id
    progress = ProgressLine()

    class ShowProgress(Hooks):
        done, total = 0, 0

        def on_start(self, total_steps: int) -> None:
            self.total = total_steps

        def on_steps(self, run: Any, steps: Any) -> None:  # StepColumns
            self.done += len(steps)
            progress.update(
                self.done, self.total, run.optimizer.label, force=self.done >= self.total
            )

    status = execute_job(job_id, extra_hooks=(ShowProgress(),) if not args.json else ())
    progress.close()
    job = jobs.get(job_id)
    summary = jobs.summary(job_id)
    if args.json:
        print(
            json.dumps(
                {"job_id": str(job_id), "status": status, "error": job.error, "summary": summary},
                indent=2,
            )
        )
    else:
        print(f"job {job_id}: {status}" + (f" ({job.error})" if job.error else ""))
        print(summary_table(summary))
    return 0 if status == "succeeded" else 1


def full_id(prefix: str, ids: Callable[[], Iterable[str]]) -> str:
    """The job id that ``prefix`` starts (dashes and case ignored), among ``ids()``: a whole id
    is taken as it is; a prefix needs 4 hex digits at least and must name one job."""
    try:
        return str(uuid.UUID(prefix))
    except ValueError:
        pass
    wanted = prefix.replace("-", "").lower()
    if len(wanted) < 4 or any(c not in string.hexdigits for c in wanted):
        raise CliError(
            f"{prefix!r} is not a job id: give the id, or its first 4 hex digits or more"
        )
    matches = sorted({str(i) for i in ids() if str(i).replace("-", "").startswith(wanted)})
    if not matches:
        raise NotFound(f"no job whose id starts with {prefix}")
    if len(matches) > 1:
        shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise CliError(f"{prefix} names {len(matches)} jobs ({shown}): type more of the id")
    return matches[0]


def _remote_ids(client: ApiClient) -> Iterator[str]:
    """Every id of the caller's jobs, through the API's pages."""
    offset = 0
    while True:
        page = client.jobs(limit=200, offset=offset)
        yield from (item["id"] for item in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return


def _local_ids() -> Iterator[str]:
    """Every job id in the configured database (operator commands)."""
    from services import jobs

    offset = 0
    while True:
        items, total = jobs.listing(None, 200, offset)
        yield from (str(job.id) for job in items)
        offset += len(items)
        if not items or offset >= total:
            return


def _client(args: argparse.Namespace) -> ApiClient:
    key = args.key or get_settings().api_key.get_secret_value() or None
    return ApiClient(args.url or get_settings().api_url, api_key=key)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_submit(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _client(args) as client:
        job = client.submit(spec.model_dump(mode="json", exclude_unset=True))
        if args.watch:
            return _watch(client, job["id"], args.json)
    if args.json:
        _print_json(job)
    else:
        print(f"submitted job {job['id']} ({len(job['runs'])} runs): optbench watch {job['id']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 200:
        raise CliError(f"--limit must be 1 to 200, got {args.limit}")
    with _client(args) as client:
        page = client.jobs(status=args.status, limit=args.limit)
    items = page["items"]
    if args.name:
        items = [job for job in items if args.name.lower() in job["name"].lower()]
    if args.json:
        _print_json({**page, "items": items})
    else:
        print(job_table(items, page["total"]))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(full_id(args.job, lambda: _remote_ids(client)))
    if args.json:
        _print_json(job)
    else:
        print(job_status(job))
    return 0


def _watch(client: ApiClient, job_id: str, as_json: bool) -> int:
    board = RunBoard()
    job = client.wait(job_id, on_update=lambda state: None if as_json else board.update(state))
    summary = client.summary(job_id)
    if as_json:
        _print_json(
            {"job_id": job_id, "status": job["status"], "error": job["error"], "summary": summary}
        )
    else:
        print(f"job {job_id}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
        print(summary_table(summary))
    return 0 if job["status"] == "succeeded" else 1


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _watch(client, full_id(args.job, lambda: _remote_ids(client)), args.json)


def cmd_summary(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.summary(full_id(args.job, lambda: _remote_ids(client)))
    if args.json:
        _print_json(summary)
    else:
        print(summary_table(summary))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(full_id(args.job, lambda: _remote_ids(client)))
    if args.json:
        _print_json(job)
    else:
        print(job_status(job))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.url:
        with _client(args) as client:
            job_id = full_id(args.job, lambda: _remote_ids(client))
            output = _report_file(args, job_id)
            html = client.report(job_id)
    else:
        from services.report import render_report

        job_id = full_id(args.job, _local_ids)
        output = _report_file(args, job_id)
        html = render_report(job_id)
    output.write_text(html, encoding="utf-8")
    print(f"wrote {output} ({len(html) // 1024} KiB): open it in a browser, no network needed")
    return 0


def _report_file(args: argparse.Namespace, job_id: str) -> Path:
    """Where ``report`` writes: ``-o``, or a file named after the job; never over a file that
    exists unless ``--force``."""
    output: Path = args.output or Path(f"optbench-report-{job_id}.html")
    if output.exists() and not args.force:
        raise CliError(f"{output} exists: pass --force to overwrite it, or -o another file")
    return output


def cmd_export(args: argparse.Namespace) -> int:
    from services.export import export_series

    out = args.output or (sys.stdout.buffer if args.format == "parquet" else sys.stdout)
    if args.format == "parquet" and out is sys.stdout.buffer and sys.stdout.isatty():
        raise CliError("parquet is binary: pass -o FILE")
    rows = export_series(full_id(args.job, _local_ids), args.format, out)
    if args.output:
        print(f"wrote {rows} rows to {args.output}", file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys in the configured database (services/auth.py)."""
    from services import auth

    _migrate_if_embedded()
    if args.action == "create":
        key = auth.create_key(args.owner)
        if args.json:
            _print_json({"id": key.id, "owner": key.owner, "key": key.token})
        else:
            print(key.token)
            print(
                f"key {key.id} for owner '{key.owner}': store it now, it is not shown again "
                "(clients send it as OPTBENCH_API_KEY or Authorization: Bearer ...)",
                file=sys.stderr,
            )
        return 0
    if args.action == "revoke":
        row = auth.revoke_key(args.id)
        print(
            f"key {row.id} of owner '{row.owner}' revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        return 0
    rows = auth.list_keys(args.owner)
    listed = [
        {
            "id": row.id,
            "owner": row.owner,
            "created_at": row.created_at,
            "last_used_at": row.last_used_at,
            "revoked_at": row.revoked_at,
        }
        for row in rows
    ]
    if args.json:
        _print_json(listed)
        return 0
    print(f"{'id':<12}  {'owner':<20}  {'created (UTC)':<16}  {'last used':<16}  revoked")
    for item in listed:
        print(
            f"{item['id']:<12}  {item['owner']:<20}  {_when(item['created_at']):<16}  "
            f"{_when(item['last_used_at']):<16}  {_when(item['revoked_at'])}"
        )
    return 0


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Send queued jobs whose task the broker does not hold, and runs of running jobs that
    lost their worker or their message, once (services/reconcile.py)."""
    from services.reconcile import VANISHED, reconcile

    _migrate_if_embedded()
    result = reconcile()
    if args.json:
        _print_json(
            {
                "sent": [str(job) for job in result.sent],
                "requeued": [
                    {
                        "job": str(item.job),
                        "runs": item.runs,
                        "reason": item.reason,
                        "worker": item.worker,
                    }
                    for item in result.requeued
                ],
                "broker_down": result.broker_down,
            }
        )
    else:
        for job in result.sent:
            print(f"sent job {job}")
        for item in result.requeued:
            why = (
                f"worker {item.worker} stopped beating"
                if item.reason == VANISHED
                else "the broker lost their part"
            )
            runs = ", ".join(str(run) for run in item.runs)
            print(f"requeued runs {runs} of job {item.job}: {why}")
        runs_requeued = sum(len(item.runs) for item in result.requeued)
        print(
            f"{len(result.sent)} job(s) sent, {runs_requeued} run(s) requeued"
            + ("; the broker is down" if result.broker_down else "")
        )
    return 1 if result.broker_down else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    return run_demo(epochs=args.epochs)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="optbench",
        description="Compare torch.optim optimizers on real training runs, as a service.",
        epilog="Exit status: 0 done, 1 job failed or not found (or refused), 2 usage mistake, "
        "3 API unreachable, 4 invalid input. A JOB is its id or a unique prefix of it.",
    )
    sub = top.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the lecture's eight optimizers on digits, end to end")
    demo.add_argument("--epochs", type=int, default=10)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a spec file in this process")
    run.add_argument("spec", type=Path, help="job spec, JSON or YAML")
    run.add_argument("--json", action="store_true", help='print {"job_id": ..., "summary": ...}')
    run.set_defaults(func=cmd_run)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--log-level", default="info")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="start a Celery worker")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="processes training at once (default: OPTBENCH_WORKER_CONCURRENCY, else one per "
        "CPU core)",
    )
    worker.add_argument(
        "--threads",
        type=_count(0),
        help="torch threads of each part of a job (default: OPTBENCH_TORCH_THREADS, else CPU "
        "cores // parts)",
    )
    worker.add_argument(
        "--parts",
        type=_parts,
        help="parts a job is split into: auto or a number (default: OPTBENCH_JOB_PARTS, auto)",
    )
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="apply database migrations (Alembic)")
    migrate.set_defaults(func=cmd_migrate)

    reconcile = sub.add_parser(
        "reconcile",
        help="send queued jobs whose task the broker does not hold, and runs of running jobs "
        "whose worker vanished or whose part message was lost, once",
    )
    reconcile.add_argument(
        "--json", action="store_true", help='print {"sent", "requeued", "broker_down"}'
    )
    reconcile.set_defaults(func=cmd_reconcile)

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key for an owner, printed once")
    create.add_argument("--owner", required=True, help="who the key acts for, e.g. alice")
    create.add_argument("--json", action="store_true", help='print {"id", "owner", "key"}')
    listing = actions.add_parser("list", help="keys: id, owner, dates (never the key)")
    listing.add_argument("--owner", help="only this owner's keys")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = actions.add_parser("revoke", help="revoke a key: it is refused from then on")
    revoke.add_argument("id", help="the key's id (from `optbench keys list`)")
    keys.set_defaults(func=cmd_keys)

    report = sub.add_parser("report", help="write a job's self-contained HTML report")
    report.add_argument("job", help="job id, or its first few characters")
    report.add_argument(
        "-o", "--output", type=Path, help="default: optbench-report-<job>.html here"
    )
    report.add_argument("--force", action="store_true", help="overwrite an existing file")
    report.add_argument(
        "--url", help="fetch it from this API (default: read the configured database)"
    )
    report.add_argument("--key", help="API key for --url (default: OPTBENCH_API_KEY)")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser("export", help="dump a job's step and epoch series")
    export.add_argument("job", help="job id, or its first few characters")
    export.add_argument("--format", choices=["csv", "json", "parquet"], default="csv")
    export.add_argument("-o", "--output", type=Path, help="file (default: standard output)")
    export.set_defaults(func=cmd_export)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url", help="the API (default: OPTBENCH_API_URL or http://127.0.0.1:8000)"
    )
    remote.add_argument(
        "--key",
        help="API key (default: OPTBENCH_API_KEY, which keeps it out of the process list); "
        "none is needed from this machine under OPTBENCH_AUTH=loopback",
    )
    remote.add_argument("--json", action="store_true", help="machine-readable output")
    submit = sub.add_parser("submit", parents=[remote], help="submit a spec file to the API")
    submit.add_argument("spec", type=Path, help="job spec, JSON or YAML")
    submit.add_argument("--watch", action="store_true", help="then watch it to the end")
    submit.set_defaults(func=cmd_submit)
    listing = sub.add_parser("list", parents=[remote], help="your jobs, newest first")
    listing.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    listing.add_argument("--name", help="only jobs whose name contains this (any case)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-200)")
    listing.set_defaults(func=cmd_list)
    for name, func, text in (
        ("status", cmd_status, "a job's status and per-run progress"),
        ("watch", cmd_watch, "live progress bars per run, then the summary"),
        ("summary", cmd_summary, "the per-optimizer summary table"),
        ("cancel", cmd_cancel, "cancel a queued or running job (stored steps stay)"),
    ):
        command = sub.add_parser(name, parents=[remote], help=text)
        command.add_argument("job", help="job id, or its first few characters")
        command.set_defaults(func=func)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ApiError, OptbenchError) as error:
        print(f"optbench: error: {error}", file=sys.stderr)
        return exit_status(error)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
