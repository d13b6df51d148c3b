"""The FastAPI application.

Served by ``optbench api``, or ``uvicorn services.api.app:create_app --factory``.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import make_asgi_app

from services.api import errors
from services.api.routes import datasets, jobs, system

DESCRIPTION = """
Compare `torch.optim` optimizers on real training runs.

Submit a job spec to `POST /v1/jobs`; workers train one run per optimizer entry and seed,
under common random numbers (same initial weights, same batches), and store every step's
and epoch's metrics. Errors are `application/problem+json` and name the field to change.
"""


def create_app() -> FastAPI:
    app = FastAPI(title="optbench", version="0.1.0", description=DESCRIPTION)
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(system.router)
    app.mount("/metrics", make_asgi_app())
    return app
