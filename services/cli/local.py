"""The commands that run the service or train in this process: demo, run, api, worker,
migrate, reconcile. They import ``workers`` (and so torch) only inside the commands that
train."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from services.cli.base import (
    JOB_FAILED,
    OK,
    cli,
    json_option,
    load_spec,
    migrate_if_embedded,
    no_color_option,
    print_json,
    show,
)
from services.cli.progress import JobProgress
from services.console import summary_table
from services.settings import get_settings


@cli.command(short_help="The lecture's eight optimizers on digits, end to end.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Epochs (default: 10, the tuned preset's with --tuned).",
)
@click.option(
    "--tuned",
    is_flag=True,
    help="The tuning study: each learning rate searched, the best rerun on 5 fresh seeds.",
)
@click.option(
    "--trials",
    type=click.IntRange(1, 512),
    help="With --tuned: trials per optimizer (default: the preset's 16).",
)
@click.option(
    "--preset",
    type=click.Choice(["lecture", "modern"]),
    default="lecture",
    show_default=True,
    help="modern: AdamW, Schedule-Free AdamW, Lion, Prodigy and SOAP on MNIST-1D, tuned "
    "(those the installed packages offer; docs/optimizers.md).",
)
@no_color_option
def demo(epochs: int | None, tuned: bool, trials: int | None, preset: str) -> int:
    """The lecture comparison on the embedded default: starts the API and one worker, submits
    the job over HTTP, shows its progress and prints the per-optimizer table. With --tuned,
    the tuned comparison (README, "Tuning studies"); with --preset modern, the modern
    optimizers on MNIST-1D (tuned)."""
    from services.demo import run_demo

    return run_demo(epochs=epochs, tuned=tuned, trials=trials, preset=preset)


@cli.command(short_help="Run a spec file in this process, print the table.")
@click.argument("spec", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"job_id", "status", "summary"}.')
@no_color_option
def run(spec: Path, as_json: bool) -> int:
    """Run the job spec in SPEC (JSON or YAML) here, store it in the configured database and
    print the per-optimizer table (progress on standard error while it trains)."""
    from services import jobs, plugins
    from services.cli.base import SpecError
    from services.db import store
    from services.db.session import unit_of_work
    from services.errors import InvalidSpec
    from workers.execution import execute_job
    from workers.warm import freeze_long_lived

    job_spec = load_spec(spec)
    if plugins.has_plugins(job_spec):  # this process trains them: its own catalog decides
        from workers.engine import optimizer_classes

        here = {described["name"]: described for described in optimizer_classes.catalog()}
        try:
            job_spec = plugins.resolve_entries(job_spec, here)
        except InvalidSpec as error:
            raise SpecError(f"{spec}: {error}") from None
    migrate_if_embedded()
    with unit_of_work() as session:
        job_id = store.create_job(session, job_spec).id
    freeze_long_lived()  # as a worker does: no full collection inside a timed step
    if as_json:
        status = execute_job(job_id)
    else:
        with JobProgress() as progress:
            status = execute_job(job_id, extra_hooks=(_progress_hooks(job_id, progress.update),))
            progress.update(_stored_state(job_id))  # the runs' and the job's final statuses
    job = jobs.get(job_id)
    result = jobs.summary(job_id)
    if as_json:
        print(
            json.dumps(
                {"job_id": str(job_id), "status": status, "error": job.error, "summary": result},
                indent=2,
            )
        )
    else:
        print(f"job {job_id}: {status}" + (f" ({job.error})" if job.error else ""))
        show(summary_table(result))
    return OK if status == "succeeded" else JOB_FAILED


def _stored_state(job_id: Any) -> dict[str, Any]:
    """The job's status and runs as stored, in the API's shape (what progress needs)."""
    from services import jobs

    job = jobs.get(job_id)
    runs = [
        {
            "id": run.id,
            "label": run.label,
            "seed": run.seed,
            "steps_done": run.steps_done,
            "total_steps": run.total_steps,
            "status": run.status,
        }
        for run in job.runs
    ]
    return {"status": job.status, "runs": runs}


def _progress_hooks(job_id: Any, show_state: Callable[[Mapping[str, Any]], None]) -> Any:
    """Engine hooks that keep the job's state in the API's shape and hand it to
    ``show_state`` after every change, as ``client.wait`` does for ``watch``."""
    from workers.engine import Hooks, RunConfig, RunResult, StepColumns

    class ShowProgress(Hooks):
        def __init__(self) -> None:
            self.job: dict[str, Any] = {"status": "running", "runs": []}
            self.runs: dict[int, dict[str, Any]] = {}

        def on_start(self, total_steps: int) -> None:
            # Planning has stored every run's total by now: one read gives all the bars.
            runs = _stored_state(job_id)["runs"]
            self.runs = {run["id"]: run for run in runs}
            self.job = {"status": "running", "runs": runs}
            show_state(self.job)

        def on_run_start(self, run: RunConfig, total_steps: int) -> None:
            self.runs[run.key].update(status="running", total_steps=total_steps)
            show_state(self.job)

        def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
            self.runs[run.key]["steps_done"] += len(steps)
            show_state(self.job)

        def on_run_end(self, run: RunConfig, result: RunResult) -> None:
            self.runs[run.key]["status"] = "succeeded"
            show_state(self.job)

    return ShowProgress()


@cli.command(short_help="Serve the HTTP API.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def api(host: str, port: int, log_level: str) -> int:
    """Serve the HTTP API (on the embedded default it migrates first)."""
    import uvicorn

    migrate_if_embedded()
    uvicorn.run(
        "services.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        # Forwarded headers are the app's to resolve, from OPTBENCH_FORWARDED_ALLOW_IPS and
        # understanding Forwarded too (services/api/proxies.py); uvicorn's own would believe
        # 127.0.0.1's X-Forwarded-For whatever that setting says.
        proxy_headers=False,
    )
    return OK


def _parts(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"'{value}' is neither auto nor a whole number >= 1")
    return str(int(value))


@cli.command(short_help="Start a Celery worker.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=0),
    default=0,
    help="Processes training at once (default: OPTBENCH_WORKER_CONCURRENCY, else one per CPU "
    "core).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    help="Torch threads of each part of a job (default: OPTBENCH_TORCH_THREADS, else CPU "
    "cores // parts).",
)
@click.option(
    "--parts",
    callback=_parts,
    help="Parts a job is split into: auto or a number (default: OPTBENCH_JOB_PARTS, auto).",
)
@click.option(
    "--gpus",
    help="Train on GPUs, one process per GPU, each pinned to its own: auto (every GPU the "
    "worker sees), a number N (the first N) or indices like 0,1. Sets --concurrency to their "
    "number unless given; a job's parts spread over them (workers/gpus.py).",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option("--log-level", default="INFO", show_default=True)
def worker(
    concurrency: int,
    threads: int | None,
    parts: str | None,
    gpus: str | None,
    pool: str,
    log_level: str,
) -> int:
    """A Celery worker of --concurrency processes (default: one per CPU core, or one per GPU
    with --gpus). Each job is split into parts that these processes train at once, each part
    with its own torch thread count (workers/parts.py; docs/cluster.md, "Parallel parts and
    threads"); on GPUs, one part per GPU."""
    import os

    from workers import gpus as gpu_workers

    chosen: list[str] = []
    if gpus is not None:
        # Counting GPUs loads torch: as in workers/celery_app.py, OpenMP's waiting threads
        # must sleep, read once when it loads (the pool's children inherit it).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            chosen = gpu_workers.resolve(gpus, os.environ, gpu_workers.device_count)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--gpus") from None
        os.environ[gpu_workers.GPUS_VARIABLE] = ",".join(chosen)
    else:
        os.environ.pop(gpu_workers.GPUS_VARIABLE, None)

    # Before torch loads (the tasks import it): the children inherit the environment.
    if threads is not None:
        os.environ["OPTBENCH_TORCH_THREADS"] = str(threads)
    if parts is not None:
        os.environ["OPTBENCH_JOB_PARTS"] = parts
    get_settings.cache_clear()
    from workers.celery_app import app
    from workers.parts import cpu_cores

    processes = concurrency or len(chosen) or get_settings().worker_concurrency or cpu_cores()
    if chosen:
        click.echo(f"GPUs {', '.join(chosen)}: {processes} process(es), each pinned to one")
    app.worker_main(
        [
            "worker",
            f"--loglevel={log_level}",
            f"--concurrency={processes}",
            f"--pool={pool}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return OK


@cli.command(short_help="Apply database migrations (Alembic).")
def migrate() -> int:
    """Apply the Alembic migrations (a cluster runs this once, before api and workers)."""
    from sqlalchemy.engine import make_url

    from services.db.migrate import upgrade

    url = get_settings().resolved_database_url
    upgrade()
    print(f"database {make_url(url).render_as_string(hide_password=True)} is at the newest schema")
    return OK


@cli.command(short_help="Send again what the broker lost, once.")
@json_option
def reconcile(as_json: bool) -> int:
    """Send queued jobs whose task the broker does not hold, and runs of running jobs whose
    worker vanished or whose part message was lost, once (services/reconcile.py; the API
    does it every 30 s). Exit status 1 while the broker is down."""
    from services.reconcile import VANISHED
    from services.reconcile import reconcile as reconcile_once

    migrate_if_embedded()
    result = reconcile_once()
    if as_json:
        print_json(
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
        return JOB_FAILED if result.broker_down else OK
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
    return JOB_FAILED if result.broker_down else OK
