"""The Celery app of the workers: ``celery -A workers.celery_app worker`` (or ``optbench worker``).

Configuration comes from services/queue.py, the same the API sends with. Each process that
trains builds its own database engine and serves its own Prometheus metrics: the pool's
children with prefork (``worker_process_init``), the worker itself with the solo or threads
pool (``worker_init``).

Processes and threads: ``--concurrency`` processes (default one per CPU core) each train one
task at a time, a whole job's first part or one of its other parts, with the torch threads
that part was planned with (workers/parts.py); between parts a process keeps one thread.
With ``optbench worker --gpus``, one process per GPU, each pinned to its own when it starts
(workers/gpus.py).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

# Waiting OpenMP threads sleep instead of spinning. Several processes each with several torch
# threads share the cores (parts of jobs, or two jobs at once): spinning threads then steal
# the cores the working ones need, which measured 5-10x slower (docs/cluster.md). Read once
# when torch loads its OpenMP runtime, so it is set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_shutting_down

from services.queue import celery_config
from services.settings import Settings, get_settings
from workers import gpus, shutdown  # shutdown's shared flag must exist before the pool forks
from workers.warm import freeze_long_lived

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

app = Celery("optbench", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))


def _init_training_process(index: int) -> None:
    import torch

    from services.db.session import reset_engine
    from services.telemetry import set_build_info

    reset_engine()  # never share the parent's connections across a fork
    # One thread until a part of a job sets its own (workers/execution.py): planning a job
    # (loading its data) never competes with the parts other processes train.
    torch.set_num_threads(1)
    _warm_up()
    _warm_lecture()
    set_build_info(torch.__version__, torch.version.cuda or "")
    serve_metrics(get_settings(), index)
    freeze_long_lived()  # no 0.2 s collection inside a timed step (workers/warm.py)


def serve_metrics(settings: Settings, index: int) -> WSGIServer | None:
    """This process's Prometheus /metrics on OPTBENCH_WORKER_METRICS_ADDRESS (loopback on the
    embedded default), port OPTBENCH_WORKER_METRICS_PORT + ``index``; None when off or the
    port is taken (training goes on without it)."""
    from prometheus_client import start_http_server

    if not settings.worker_metrics_port:
        return None
    # One port per pool process (base port + process index): no counter is shared.
    port, address = settings.worker_metrics_port + index, settings.worker_metrics_bind
    try:
        server, _ = start_http_server(port, addr=address)
    except OSError as error:
        log.warning("worker metrics on %s:%d unavailable: %s", address, port, error)
        return None
    log.info("worker metrics on %s:%d/metrics", address, port)
    return server


@worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    gpus.pin(index)  # `--gpus`: this child's own GPU, before anything initialises CUDA here
    _init_training_process(index)


def _preload(
    modules: tuple[str, ...] = ("sklearn.datasets", "mnist1d.data", "torch._dynamo"),
) -> None:
    """Import the data set libraries once, before the pool forks: a part's first task in a
    fresh process then loads its data without ~1 s of imports (scikit-learn, mnist1d).
    Likewise the FLOP counter the part planner uses (workers/parts.py): its first use costs
    0.8 s of lazy initialisation, a fifth of a small job's time end to end; it warms up in
    each training process (``_warm_up``), not here: no torch work before the fork."""
    import importlib

    # torch._dynamo: torch.optim imports it at an optimizer's first step (its step is wrapped
    # to keep dynamo out), 820 modules and 2.4 s on the 2-core VM, once per process: that was
    # paid inside the first job part each pool process trained. Imported here, it is paid
    # once, before the fork (an import only: no torch work, no threads).
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # pragma: no cover - a worker without the optional packages
            log.debug("%s not installed", module)


def _warm_up() -> None:
    """Pay one-time initialisations when the process starts, not in a job: the FLOP
    counter's, and an optimizer's first step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    layer = torch.nn.Linear(2, 2)
    with FlopCounterMode(display=False):
        layer(torch.zeros(1, 2)).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()


_publisher: list[Any] = []  # this worker's CatalogPublisher (workers/catalog.py)


def _publish_catalog() -> None:
    """The plugin optimizers this worker can train, to the database (for the API), now and
    every heartbeat; the classes are imported here, before the pool forks (and each built
    once on two tiny tensors: no parallel region, nothing the children inherit running)."""
    from workers.catalog import CatalogPublisher

    publisher = CatalogPublisher(get_settings().heartbeat_seconds)
    publisher.start()
    _publisher.append(publisher)


def _warm_lecture() -> None:
    """The lecture job's paths once, and its data cached (workers/warm.py); a failure only
    costs the first job its warm start."""
    from workers.warm import warm_lecture

    try:
        log.info("warmed up on the lecture's data in %.2f s", warm_lecture(get_settings()))
    except Exception as error:  # never stop a worker for its warm-up
        log.warning("warm-up skipped: %s: %s", type(error).__name__, error)


@worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    pool = getattr(sender, "pool_cls", None)
    pool_module = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" in str(pool_module):
        _preload()
        _publish_catalog()
        # Frozen before the fork, what the children inherit is never walked (nor its pages
        # written) by their collections; each child freezes its own warm-up after.
        freeze_long_lived()
    else:  # solo/threads: this process trains, on one GPU, and is ready once warm
        # What the warm-up does not need is imported by the first job that does: before
        # the fork it is paid once for every child, here it would only delay the start
        # (mnist1d pulls in matplotlib: 1.4 s of imports on the loaded 2-core VM; the
        # lecture's digits are read without scikit-learn, workers/engine/datasets.py).
        _preload(("torch._dynamo",))
        _publish_catalog()
        gpus.pin(0)
        _init_training_process(0)


@worker_shutting_down.connect
def _stop_training(**_: Any) -> None:
    """Warm shutdown: the pool's processes stop their runs at the next flush, with a
    checkpoint, and send them back to the queue (workers/shutdown.py)."""
    log.info("shutting down: training stops at the next flush, runs go back to the queue")
    shutdown.request()
    for publisher in _publisher:
        publisher.stop()
