"""Prometheus metrics (prefix ``optbench_``, base units, ``_total`` on counters).

Labels stay low-cardinality: optimizer (the catalog name, never a user's label), dataset,
model, device, status, reason, granularity. Never a job or run id.

Who counts what, so that nothing is counted twice:
- the API process: submissions, rejections, jobs queued (read from the database at scrape
  time) and HTTP requests (prometheus-fastapi-instrumentator);
- each worker process, on its own port: everything about training, outcomes and writes.
Both expose ``optbench_build_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

# Buckets that fit training rather than web latency.
_STEP_SECONDS = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
_LONG_SECONDS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)
_STEPS = (1, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000, 1_000_000)

JOBS_SUBMITTED = Counter("optbench_jobs_submitted_total", "Jobs accepted by the API.")
JOBS_REJECTED = Counter(
    "optbench_jobs_rejected_total", "Job submissions refused by the API.", ["reason"]
)
JOBS_FINISHED = Counter(
    "optbench_jobs_finished_total", "Jobs that ended, by final status.", ["status"]
)
QUEUE_WAIT_SECONDS = Histogram(
    "optbench_job_queue_wait_seconds",
    "Time from submission until a worker started the job.",
    buckets=_LONG_SECONDS,
)
JOB_DURATION_SECONDS = Histogram(
    "optbench_job_duration_seconds",
    "Time from a worker starting a job until it ended, by final status.",
    ["status"],
    buckets=_LONG_SECONDS,
)
RUNS_ACTIVE = Gauge("optbench_runs_active", "Runs training right now in this process.")
TRAIN_STEPS = Counter(
    "optbench_train_steps_total",
    "Optimizer steps taken.",
    ["optimizer", "dataset", "model", "device"],
)
TRAIN_SAMPLES = Counter(
    "optbench_train_samples_total",
    "Training samples processed (rate() gives throughput).",
    ["optimizer", "dataset", "model", "device"],
)
STEP_SECONDS = Histogram(
    "optbench_train_step_duration_seconds",
    "Training time of one optimizer step (forward, backward, update).",
    ["optimizer", "device"],
    buckets=_STEP_SECONDS,
)
STEPS_TO_TARGET = Histogram(
    "optbench_steps_to_target",
    "Steps a run took to reach its job's target (observed once per run that reached it).",
    ["optimizer", "dataset"],
    buckets=_STEPS,
)
SECONDS_TO_TARGET = Histogram(
    "optbench_time_to_target_seconds",
    "Training seconds a run took to reach its job's target.",
    ["optimizer", "dataset"],
    buckets=_LONG_SECONDS,
)
RUNS_DIVERGED = Counter(
    "optbench_runs_diverged_total",
    "Runs stopped by a non-finite or exploding loss.",
    ["optimizer", "dataset"],
)
METRIC_ROWS_WRITTEN = Counter(
    "optbench_metric_rows_written_total", "Metric rows stored.", ["granularity"]
)
METRIC_ROWS_DEDUPLICATED = Counter(
    "optbench_metric_rows_deduplicated_total",
    "Metric rows skipped because the same key was already stored (a redelivered task).",
    ["granularity"],
)
METRIC_WRITE_SECONDS = Histogram(
    "optbench_metric_write_duration_seconds",
    "Time to write one flush of metric rows, in its own transaction.",
    ["granularity"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
METRIC_WRITE_RETRIES = Counter(
    "optbench_metric_write_retries_total",
    "Metric write transactions tried again after a transient database error (connection "
    "refused or lost, the database starting up); the rows wait in the worker meanwhile.",
)
CHECKPOINTS = Counter(
    "optbench_checkpoints_total",
    "Run checkpoints stored (one per run; workers/sinks/checkpoints.py).",
)
CHECKPOINT_BYTES = Counter(
    "optbench_checkpoint_bytes_total", "Bytes of the run checkpoints stored."
)
CHECKPOINT_SECONDS = Counter(
    "optbench_checkpoint_seconds_total",
    "Training-thread seconds spent checkpointing: serialising, waiting for the step rows "
    "before it, writing.",
)
TASK_REDELIVERIES = Counter(
    "optbench_task_redeliveries_total",
    "Tasks the broker delivered again (a worker died or lost its connection before acking).",
)
BUILD = Info("optbench_build", "Versions of optbench, torch and CUDA in this process.")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def set_build_info(torch_version: str = "", cuda: str = "") -> None:
    """The API passes nothing (it has no torch); a worker passes torch's and CUDA's versions."""
    BUILD.info({"version": _version("optbench"), "torch": torch_version, "cuda": cuda})


class JobsByStatus(Collector):
    """``optbench_jobs{status}`` read from the database at scrape time: the queue's backlog
    (``status="queued"``) is a fact of the database, not of any one process."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "optbench_jobs", "Jobs by status, from the database.", labels=["status"]
        )
        try:
            counts = self.counts()
        except Exception:  # the database is down: /metrics still answers, without this family
            return
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            family.add_metric([status], counts.get(status, 0))
        yield family


_registered: list[Collector] = []


def register_jobs_collector(counts: Callable[[], dict[str, int]]) -> None:
    """Register once per process (app factories may run several times in tests)."""
    if not _registered:
        collector = JobsByStatus(counts)
        REGISTRY.register(collector)
        _registered.append(collector)
