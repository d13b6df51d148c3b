"""The Celery app of the workers: ``celery -A workers.celery_app worker`` (or ``optbench worker``).

Configuration comes from services/queue.py, the same the API sends with. Each process that
trains builds its own database engine and serves its own Prometheus metrics: the pool's
children with prefork (``worker_process_init``), the worker itself with the solo or threads
pool (``worker_init``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from services.queue import celery_config
from services.settings import get_settings

log = logging.getLogger(__name__)

app = Celery("optbench", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))


def _init_training_process(index: int) -> None:
    import torch
    from prometheus_client import start_http_server

    from services.db.session import reset_engine
    from services.telemetry import set_build_info

    reset_engine()  # never share the parent's connections across a fork
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    set_build_info(torch.__version__, torch.version.cuda or "")
    if settings.worker_metrics_port:
        # One port per pool process (base port + process index): no counter is shared.
        port = settings.worker_metrics_port + index
        try:
            start_http_server(port)
            log.info("worker metrics on :%d/metrics", port)
        except OSError as error:
            log.warning("worker metrics port %d unavailable: %s", port, error)


@worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    from billiard.process import current_process

    _init_training_process(getattr(current_process(), "index", 0) or 0)


@worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    pool = getattr(sender, "pool_cls", None)
    pool_module = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" not in str(pool_module):  # solo/threads: this process trains
        _init_training_process(0)
