"""A worker process's warm-up: the lecture job's code paths run once before the first task.

A fresh process pays one-time costs in its first job: the engine's modules imported, torch's
kernels and autograd initialised for the model's shapes, an optimizer's first step, the data
set read and split. For the README's first job (the lecture's eight optimizers on digits,
``LECTURE_SPEC``) that was most of what the user waited for after the worker had started.
``warm_lecture`` trains one epoch of three runs (a fused pair and a full-batch run, as the
lecture job trains) on the lecture's data set with no sinks, when the process starts: it
leaves the lecture's splits in the process's data cache (workers/engine/data_cache.py), so
the lecture job itself loads nothing.

``freeze_long_lived`` then takes what the process holds out of the cyclic collector's reach.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import cast

from sqlalchemy.orm import Session

from services.settings import Settings
from services.spec import CATALOG, LECTURE_SPEC, JobSpec
from workers.adapter import dataset_config, pick_device
from workers.engine import Experiment, Hooks, JobConfig, ModelConfig, OptimizerConfig, RunConfig

log = logging.getLogger(__name__)


def warm_lecture(settings: Settings) -> float:
    """Train the lecture's warm-up (see the module) on this worker's device; its seconds."""
    began = time.perf_counter()
    spec = JobSpec.model_validate({**LECTURE_SPEC, "epochs": 1})
    # The digits spec names no upload, so the translation reads no database: the same
    # DatasetConfig (and cache key) as the lecture job's own.
    dataset = dataset_config(cast(Session, None), spec, settings)
    optimizers = [
        OptimizerConfig("warm sgd", "sgd", CATALOG["sgd"].torch_class, {"lr": 0.05}),
        OptimizerConfig("warm momentum", "momentum", CATALOG["momentum"].torch_class, {"lr": 0.05}),
        OptimizerConfig("warm gd", "gd", CATALOG["gd"].torch_class, {"lr": 0.5}, True),
    ]
    config = JobConfig(
        dataset=dataset,
        model=ModelConfig(spec.model.name, spec.model.model_dump(exclude={"name"})),
        runs=tuple(RunConfig(key=k, optimizer=o, seed=0) for k, o in enumerate(optimizers)),
        epochs=1,
        batch_size=spec.batch_size,
        device=pick_device(settings.device),
    )
    Experiment(config).run_all(Hooks())
    return time.perf_counter() - began


def freeze_long_lived() -> None:
    """Move every object alive now into the collector's permanent generation (``gc.freeze``),
    once a training process has imported and warmed up, before it trains a job.

    Why: a worker holds some 380,000 long-lived objects (torch, torch._dynamo, SQLAlchemy,
    Celery), and a full collection walks them all, 210 ms on the 2-core VM. Python starts
    one once enough objects have survived since the last, whichever thread allocated them
    (the SQL sink's writer thread too), and it stops every thread: the member whose step
    was being timed was charged for it. In the demo RMSprop's stored time to target read
    0.28 s in two runs of nine, 0.04 s in the others. Frozen objects are skipped, so a full
    collection takes 3-13 ms. They are still freed when their last reference goes; only a
    frozen cycle that later becomes garbage stays, hence once per process and not per job
    (a job's objects are created after it)."""
    gc.freeze()
