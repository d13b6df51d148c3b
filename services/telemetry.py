"""Prometheus metrics (prefix ``optbench_``, base units, low-cardinality labels only).

The API process counts submissions; worker processes count training and outcomes and serve
their own ``/metrics`` (OPTBENCH_WORKER_METRICS_PORT), so nothing is counted twice.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_SUBMITTED = Counter("optbench_jobs_submitted_total", "Jobs accepted by the API.")
JOBS_REJECTED = Counter(
    "optbench_jobs_rejected_total", "Job submissions refused by the API.", ["reason"]
)
JOBS_FINISHED = Counter(
    "optbench_jobs_finished_total", "Jobs that ended, by final status.", ["status"]
)
RUNS_ACTIVE = Gauge("optbench_runs_active", "Runs training right now in this process.")
TRAIN_STEPS = Counter(
    "optbench_train_steps_total", "Optimizer steps taken.", ["optimizer", "dataset", "device"]
)
TRAIN_SAMPLES = Counter(
    "optbench_train_samples_total",
    "Training samples processed (rate() gives throughput).",
    ["optimizer", "dataset", "device"],
)
RUNS_DIVERGED = Counter(
    "optbench_runs_diverged_total", "Runs stopped by a non-finite loss or gradient.", ["optimizer"]
)
METRIC_ROWS_WRITTEN = Counter(
    "optbench_metric_rows_written_total", "Metric rows stored.", ["granularity"]
)
METRIC_WRITE_SECONDS = Histogram(
    "optbench_metric_write_duration_seconds",
    "Time to write one flush of metric rows.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
