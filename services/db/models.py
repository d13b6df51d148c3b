"""Tables: job → run → step_metric / epoch_metric (+ step_rollup), dataset, api_key. Alembic
(migrations/) owns the schema.

The same models run on PostgreSQL (JSONB, native UUID, BIGINT keys) and on SQLite, the
embedded default.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
# A run's part in a job (Run.role): a plain comparison's runs, or a tuning study's.
RUN_ROLE, TRIAL, RERUN, BASELINE = "run", "trial", "rerun", "baseline"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database: SQLite returns naive datetimes,
    which were written in UTC, so they get their zone back here, once."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Suite(Base):
    """A suite (services/spec/suite.py): one tuning-study job per workload and study, each a
    ``Job`` with ``suite_id`` set. Its ``status`` follows theirs (services/suite/cases.py)."""

    __tablename__ = "suite"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(128), default="local")
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str | None] = mapped_column(String(64))

    jobs: Mapped[list[Job]] = relationship(
        order_by="(Job.suite_workload, Job.suite_study)", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_suite_owner_created", "owner", "created_at"),
        Index("ux_suite_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )


class Job(Base):
    __tablename__ = "job"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(128), default="local")
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    summary: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Where the job's time went, as its workers measured it (workers/timings.py): when its
    # task was picked up, its data ready, its first and last step, its rows committed.
    timings: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The client's Idempotency-Key of the POST that created the job (unique per owner) and the
    # SHA-256 of that request's canonical spec: a repeat with another spec is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    # When the job's task was last handed to the broker (NULL: the broker has not taken it,
    # so services/reconcile.py sends it), and how many times that was tried.
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    enqueue_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # A suite's child job (services/suite/): its suite, workload name and study number.
    suite_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("suite.id", ondelete="CASCADE"), index=True
    )
    suite_workload: Mapped[str | None] = mapped_column(String(40))
    suite_study: Mapped[int | None] = mapped_column(Integer)

    runs: Mapped[list[Run]] = relationship(
        back_populates="job", order_by="Run.id", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_job_owner_created", "owner", "created_at"),
        Index("ux_job_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )


class Run(Base):
    __tablename__ = "run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    optimizer: Mapped[str] = mapped_column(String(100))  # a plugin's "<source>:<Name>" too
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(Json)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    diverged: Mapped[bool] = mapped_column(Boolean, default=False)
    diverged_at_step: Mapped[int | None] = mapped_column(Integer)
    test_loss: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)  # R² for regression
    error: Mapped[str | None] = mapped_column(Text)
    # Whether it trained in a fused group, and with how many runs, or why it trained alone.
    fused: Mapped[bool | None] = mapped_column(Boolean)
    fusion: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Crash safety (workers/leases.py): how many deliveries started training this run
    # (capped: a run that keeps killing its workers fails), and the liveness of the worker
    # process training it now (services/db/leases.py; the reconciler requeues stale ones).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid
    # Tuning studies (services/study/): "run" in a plain comparison; in a study "trial" (a
    # sampled setting, numbered by ``trial`` within its label), "rerun" (the best trial's
    # setting on a fresh seed) or "baseline" (the entry's given values on a fresh seed).
    role: Mapped[str] = mapped_column(String(16), default=RUN_ROLE, server_default=RUN_ROLE)
    trial: Mapped[int | None] = mapped_column(Integer)
    pruned_at_epoch: Mapped[int | None] = mapped_column(Integer)  # the rung that stopped it
    selection_score: Mapped[float | None] = mapped_column(Float)  # a trial's, once selected
    # Where it trained: "cuda:1" (a worker's GPU, workers/gpus.py) or "cpu"; NULL until then.
    device: Mapped[str | None] = mapped_column(String(64))

    job: Mapped[Job] = relationship(back_populates="runs")


class RunCheckpoint(Base):
    """A run's latest training state (workers/checkpoints.py): model, optimizer, scheduler,
    RNG and data position after ``step``. A redelivered run resumes from it; ``layout`` says
    how it was trained (alone, or which fused group), which the resuming part must match."""

    __tablename__ = "run_checkpoint"

    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)  # epochs completed at ``step``
    layout: Mapped[str] = mapped_column(Text)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class StepMetric(Base):
    __tablename__ = "step_metric"

    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    grad_norm: Mapped[float] = mapped_column(Float)
    train_seconds: Mapped[float] = mapped_column(Float)
    # Landscapes: the point where this step's loss was evaluated.
    x: Mapped[float | None] = mapped_column(Float)
    y: Mapped[float | None] = mapped_column(Float)
    # Set on the steps where a mid-epoch evaluation ran (eval_every_steps).
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)


ROLLUP_BLOCK = 64  # steps per step_rollup block: block = (step - 1) // ROLLUP_BLOCK


class StepRollup(Base):
    """Per run, one row per block of ROLLUP_BLOCK steps (PostgreSQL only; empty on SQLite):
    for each of ROLLUP_FIELDS its minimum and maximum (NULLs skipped) and its value at the
    block's last stored step (NULL included). Written with the step rows, in the same
    statement (services.db.metric_writes); read by downsampled queries of long runs
    (services.db.metric_queries)."""

    __tablename__ = "step_rollup"

    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
    )
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_step: Mapped[int] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer)
    epoch_min: Mapped[int | None] = mapped_column(Integer)
    epoch_max: Mapped[int | None] = mapped_column(Integer)
    epoch_last: Mapped[int | None] = mapped_column(Integer)
    loss_min: Mapped[float | None] = mapped_column(Float)
    loss_max: Mapped[float | None] = mapped_column(Float)
    loss_last: Mapped[float | None] = mapped_column(Float)
    accuracy_min: Mapped[float | None] = mapped_column(Float)
    accuracy_max: Mapped[float | None] = mapped_column(Float)
    accuracy_last: Mapped[float | None] = mapped_column(Float)
    lr_min: Mapped[float | None] = mapped_column(Float)
    lr_max: Mapped[float | None] = mapped_column(Float)
    lr_last: Mapped[float | None] = mapped_column(Float)
    grad_norm_min: Mapped[float | None] = mapped_column(Float)
    grad_norm_max: Mapped[float | None] = mapped_column(Float)
    grad_norm_last: Mapped[float | None] = mapped_column(Float)
    train_seconds_min: Mapped[float | None] = mapped_column(Float)
    train_seconds_max: Mapped[float | None] = mapped_column(Float)
    train_seconds_last: Mapped[float | None] = mapped_column(Float)
    x_min: Mapped[float | None] = mapped_column(Float)
    x_max: Mapped[float | None] = mapped_column(Float)
    x_last: Mapped[float | None] = mapped_column(Float)
    y_min: Mapped[float | None] = mapped_column(Float)
    y_max: Mapped[float | None] = mapped_column(Float)
    y_last: Mapped[float | None] = mapped_column(Float)
    val_loss_min: Mapped[float | None] = mapped_column(Float)
    val_loss_max: Mapped[float | None] = mapped_column(Float)
    val_loss_last: Mapped[float | None] = mapped_column(Float)
    val_accuracy_min: Mapped[float | None] = mapped_column(Float)
    val_accuracy_max: Mapped[float | None] = mapped_column(Float)
    val_accuracy_last: Mapped[float | None] = mapped_column(Float)


class EpochMetric(Base):
    __tablename__ = "epoch_metric"

    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    train_seconds: Mapped[float] = mapped_column(Float)
    distance: Mapped[float | None] = mapped_column(Float)  # landscapes: to the nearest minimum


class Dataset(Base):
    """A user's uploaded data set, stored in the database so that every worker can load it."""

    __tablename__ = "dataset"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(128), default="local")
    name: Mapped[str] = mapped_column(String(200))
    source_format: Mapped[str] = mapped_column(String(8))  # npz or csv, as uploaded
    task: Mapped[str] = mapped_column(String(16))  # classification or regression
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Normalised NPZ (x: float32 N x D, y: labels or targets), whatever was uploaded.
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)

    __table_args__ = (Index("ix_dataset_owner_created", "owner", "created_at"),)


class ApiKey(Base):
    """An API key (services/auth.py). The key itself is ``ob_<id>_<secret>`` and is shown
    once, when created; only the SHA-256 of its secret part is stored. ``id`` is public: it
    names the key in ``optbench keys list`` and ``revoke``, and finds the row to compare."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


STEP_FIELDS = (
    "step",
    "epoch",
    "loss",
    "accuracy",
    "lr",
    "grad_norm",
    "train_seconds",
    "x",
    "y",
    "val_loss",
    "val_accuracy",
)
# The step fields step_rollup summarises: every step field but the key itself.
ROLLUP_FIELDS = STEP_FIELDS[1:]
EPOCH_FIELDS = (
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "train_seconds",
    "distance",
)


class WorkerCatalog(Base):
    """What one worker process can train beyond ``torch.optim`` (workers/catalog.py): the
    plugin optimizers it found, as published at its start and refreshed every heartbeat.
    The API (torch-free) validates a job's plugin entries against the live workers' rows
    (services/plugins.py); a stopping worker deletes its row."""

    __tablename__ = "worker_catalog"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid
    published_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    optimizers: Mapped[list[dict[str, Any]]] = mapped_column(Json)
