"""The Celery app of the workers: ``celery -A workers.celery_app worker`` (or ``optbench worker``).

Configuration comes from services/queue.py, the same the API sends with. Each worker process
builds its own database engine and serves its own Prometheus metrics (worker_process_init).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from services.queue import celery_config
from services.settings import get_settings

log = logging.getLogger(__name__)

app = Celery("optbench", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))


@worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    from billiard.process import current_process
    from prometheus_client import start_http_server

    from services.db.session import reset_engine

    reset_engine()  # never share the parent's connections across a fork
    settings = get_settings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if settings.worker_metrics_port:
        # One port per pool process (base port + process index): no counter is shared.
        port = settings.worker_metrics_port + (getattr(current_process(), "index", 0) or 0)
        try:
            start_http_server(port)
            log.info("worker metrics on :%d/metrics", port)
        except OSError as error:
            log.warning("worker metrics port %d unavailable: %s", port, error)
