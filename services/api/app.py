"""The FastAPI application.

Served by ``optbench api``, or ``uvicorn services.api.app:create_app --factory``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

from services import jobs as job_cases
from services import reconcile, retention
from services.api import errors, request_context, security
from services.api.routes import compare as compare_routes
from services.api.routes import datasets, jobs, metrics, suites, system, trials, web
from services.api.routes import history as history_routes
from services.api.routes import report as report_routes
from services.settings import get_settings
from services.telemetry import register_jobs_collector, set_build_info

DESCRIPTION = """
Compare `torch.optim` optimizers on real training runs.

Submit a job spec to `POST /v1/jobs`; workers train one run per optimizer entry and seed,
under common random numbers (same initial weights, same batches), and store every step's
and epoch's metrics. Errors are `application/problem+json` and name the field to change.

Every `/v1` route needs an API key, `Authorization: Bearer ob_...` (`optbench keys create
--owner NAME`), except, under `OPTBENCH_AUTH=loopback` (the default on the embedded SQLite
database only), requests from this machine, which act as owner `local`. Jobs and data sets
belong to their owner: another owner's are 404.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the API serves: send queued jobs the broker does not hold (services/reconcile.py);
    with OPTBENCH_JOB_RETENTION_DAYS set, delete finished jobs past it (services/retention.py)."""
    settings = get_settings()
    interval = settings.reconcile_interval_seconds
    tasks = [asyncio.create_task(reconcile.run_forever(interval))] if interval > 0 else []
    if settings.job_retention_days > 0:
        tasks.append(asyncio.create_task(retention.run_forever()))
    yield
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def create_app() -> FastAPI:
    # One schema per model (no -Input/-Output pairs): a spec reads back as it was written,
    # so generated clients get one JobSpec type for both directions.
    app = FastAPI(
        title="optbench",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,
        dependencies=[Depends(errors.refuse_control_characters_in_parameters)],
    )
    errors.install(app)
    security.install(app)  # before the instrumentator, so that its middleware counts 401s
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(trials.router)
    app.include_router(report_routes.router)
    app.include_router(datasets.router)
    app.include_router(compare_routes.router)
    app.include_router(history_routes.router)
    app.include_router(suites.router)
    app.include_router(system.router)
    app.include_router(web.router)
    app.include_router(web.presets_router)
    # HTTP requests and latency by route template (never by raw path: ids stay out).
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app)
    register_jobs_collector(job_cases.counts_by_status)
    set_build_info()  # the API has no torch: its build info names optbench's version only
    request_context.install(app)  # last: outermost, it catches what every other one raises
    return app
