"""Dump a job's recorded series: ``export_series(job_id, fmt, out)`` for ``optbench export``.

    from services.export import export_series
    export_series(job_id, "csv", "metrics.csv")             # a path (str or Path) ...
    export_series(job_id, "parquet", sys.stdout.buffer)     # ... or an open file
    rows = export_series(job_id, "json", io.StringIO(), granularity="epoch")

``fmt`` is ``csv``, ``json`` or ``parquet``; ``out`` is a path or a writable file. CSV and
JSON are text (UTF-8): a text file gets ``str``, a binary one the encoded bytes; parquet
needs a binary file or a path. ``granularity`` is ``"step"``, ``"epoch"`` or ``None``
(both, the default). Returns the number of rows written (CSV, parquet) or of series points
(JSON: the same number). Raises ``NotFound`` for an unknown job and ``InvalidSpec`` for an
unknown format or granularity.

Formats (decided here):

- **csv** and **parquet**: one long table, one row per run and step or epoch, step rows
  first then epoch rows of each run::

      job_id, job_name, dataset, model, run_id, label, optimizer, seed, hyperparameters,
      granularity, step, epoch, <value columns>

  The first nine (``RUN_COLUMNS``, shared with the API's ``/metrics?format=csv``) say whose
  row it is, so that exports of several jobs can be concatenated and joined on ``job_id``
  and ``label`` (or ``run_id``): ``job_id`` the job's UUID, ``job_name`` its name (empty or
  null if it has none), ``dataset`` and ``model`` the spec's data set and model names
  (``dataset.name``, ``model.name``; their other settings are in the spec), ``label``,
  ``optimizer`` and ``seed`` the run's, and ``hyperparameters`` the run's optimizer
  keyword arguments as compact JSON with sorted keys
  (``{"betas":[0.9,0.999],"eps":1e-08,"lr":0.001,...}``; ``json.loads`` gives them back),
  one column whatever the optimizer so that the schema is the same for every job. The
  ``lr`` value column stays the learning rate actually used at that step (after any
  schedule); the configured one is ``hyperparameters["lr"]``.

  ``granularity`` is ``step`` or ``epoch``; a step row's ``epoch`` is the epoch the step
  belongs to, an epoch row's ``step`` the global step at the end of that epoch. The value
  columns are the union of both tables' (``VALUE_COLUMNS``): ``loss, accuracy, lr,
  grad_norm, train_seconds, x, y, val_loss, val_accuracy`` (step; ``val_*`` and
  ``train_seconds`` mean the same per epoch), then ``train_loss, train_accuracy, distance``
  (epoch); a column that does not apply, and a NaN (stored as NULL), is empty (CSV) or
  null (parquet). One file, one schema: filter on ``granularity``. Parquet stores the job
  id, the spec and the summary as JSON in the schema metadata (``optbench.job_id``,
  ``optbench.spec``, ``optbench.summary``).
- **json**: ``{"job_id", "name", "status", "device", "spec", "summary", "metrics":
  {"step": <GET /v1/jobs/{id}/metrics?granularity=step>, "epoch": <...=epoch>}}``, each
  metrics entry in the endpoint's columnar shape ``{"job_id", "granularity", "runs":
  [{"run_id", "label", "optimizer", "seed", "series": {column: [...]}}]}``, each run entry
  carrying the ``RUN_COLUMNS`` too (``job_id``, ``job_name``, ``dataset``, ``model``, and
  ``hyperparameters`` as an object), so that a run entry taken out of its document still
  says whose it is. Non-finite numbers are written as null (JSON has no NaN).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Literal

from services.db import metric_queries, store
from services.db.models import EPOCH_FIELDS, STEP_FIELDS, Job, Run
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.summary import current_summary

Format = Literal["csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
GRANULARITIES: tuple[str, ...] = ("step", "epoch")
RUN_COLUMNS: tuple[str, ...] = (
    "job_id",
    "job_name",
    "dataset",
    "model",
    "run_id",
    "label",
    "optimizer",
    "seed",
    "hyperparameters",
)
KEY_COLUMNS = (*RUN_COLUMNS, "granularity", "step", "epoch")
VALUE_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(f for f in (*STEP_FIELDS, *EPOCH_FIELDS) if f not in ("step", "epoch"))
)
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS


def hyperparameters_json(values: Mapping[str, Any] | None) -> str:
    """The ``hyperparameters`` column: compact JSON, sorted keys (non-finite numbers null)."""
    return json.dumps(
        _clean(dict(values or {})), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def _spec_name(spec: Mapping[str, Any], part: str) -> str | None:
    value = spec.get(part)
    name = value.get("name") if isinstance(value, Mapping) else None
    return name if isinstance(name, str) else None


def run_columns(job: Job, runs: Iterable[Run]) -> dict[int, tuple[Any, ...]]:
    """Per run id, its ``RUN_COLUMNS`` values (the export's and the metrics CSV's)."""
    spec = job.spec or {}
    head = (str(job.id), job.name or None, _spec_name(spec, "dataset"), _spec_name(spec, "model"))
    return {
        run.id: (
            *head,
            run.id,
            run.label,
            run.optimizer,
            run.seed,
            hyperparameters_json(run.hyperparameters),
        )
        for run in runs
    }


@dataclass(frozen=True)
class _Run:
    id: int
    label: str
    optimizer: str
    seed: int
    hyperparameters: dict[str, Any]
    columns: tuple[Any, ...]  # its RUN_COLUMNS values


@dataclass(frozen=True)
class _Job:
    id: str
    name: str
    status: str
    device: str | None
    spec: dict[str, Any]
    summary: dict[str, Any]
    runs: list[_Run]
    series: dict[str, dict[int, dict[str, list[Any]]]]  # granularity → run id → columns


def _load(job_id: uuid.UUID | str, granularities: tuple[str, ...]) -> _Job:
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        summary = current_summary(session, job)
        about = run_columns(job, job.runs)
        return _Job(
            id=str(job.id),
            name=job.name,
            status=job.status,
            device=job.device,
            spec=dict(job.spec),
            summary=dict(summary),
            runs=[
                _Run(
                    run.id,
                    run.label,
                    run.optimizer,
                    run.seed,
                    dict(run.hyperparameters or {}),
                    about[run.id],
                )
                for run in job.runs
            ],
            series={g: metric_queries.series(session, ids, g) for g in granularities},
        )


def _rows(job: _Job) -> Iterator[tuple[Any, ...]]:
    """The long table: per run, its step rows then its epoch rows."""
    for run in job.runs:
        for granularity, by_run in job.series.items():
            columns = by_run[run.id]
            if not columns:
                continue
            length = len(columns[next(iter(columns))])
            missing = [None] * length
            values = [columns.get(name, missing) for name in ("step", "epoch", *VALUE_COLUMNS)]
            head = (*run.columns, granularity)
            for index in range(length):
                yield head + tuple(column[index] for column in values)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@contextmanager
def _text_sink(out: IO[Any] | str | os.PathLike[str]) -> Iterator[IO[str]]:
    """A text stream onto a path, a text file, or a binary file (UTF-8)."""
    if isinstance(out, str | os.PathLike):
        with open(out, "w", encoding="utf-8", newline="") as handle:
            yield handle
    elif isinstance(out, io.TextIOBase) or hasattr(out, "encoding"):
        yield out
    else:
        wrapper = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        try:
            yield wrapper
        finally:
            wrapper.flush()
            wrapper.detach()  # leave the caller's file open


def _write_csv(job: _Job, sink: IO[str]) -> int:
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in _rows(job):
        writer.writerow(row)  # None is written as an empty field, floats as repr()
        count += 1
    return count


def _metrics_shape(job: _Job, granularity: str) -> dict[str, Any]:
    by_run = job.series[granularity]
    return {
        "job_id": job.id,
        "granularity": granularity,
        "runs": [
            {
                **dict(zip(RUN_COLUMNS, run.columns, strict=True)),
                "hyperparameters": run.hyperparameters,
                "series": by_run[run.id],
            }
            for run in job.runs
        ],
    }


def _write_json(job: _Job, sink: IO[str]) -> int:
    document = {
        "job_id": job.id,
        "name": job.name,
        "status": job.status,
        "device": job.device,
        "spec": job.spec,
        "summary": job.summary,
        "metrics": {g: _metrics_shape(job, g) for g in job.series},
    }
    json.dump(_clean(document), sink, allow_nan=False, ensure_ascii=False)
    sink.write("\n")
    return sum(_points(columns) for by_run in job.series.values() for columns in by_run.values())


def _points(columns: dict[str, list[Any]]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def parquet_table(job: _Job) -> Any:
    """The long table as a ``pyarrow.Table`` with an explicit schema."""
    import pyarrow as pa  # only the parquet export needs it

    schema = pa.schema(
        [
            ("job_id", pa.string()),
            ("job_name", pa.string()),
            ("dataset", pa.string()),
            ("model", pa.string()),
            ("run_id", pa.int64()),
            ("label", pa.string()),
            ("optimizer", pa.string()),
            ("seed", pa.int64()),
            ("hyperparameters", pa.string()),
            ("granularity", pa.dictionary(pa.int8(), pa.string())),
            ("step", pa.int64()),
            ("epoch", pa.int64()),
            *((name, pa.float64()) for name in VALUE_COLUMNS),
        ],
        metadata={
            "optbench.job_id": job.id,
            "optbench.spec": json.dumps(_clean(job.spec)),
            "optbench.summary": json.dumps(_clean(job.summary)),
        },
    )
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    for row in _rows(job):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    arrays = [
        pa.array(column, type=pa.string()).dictionary_encode().cast(field.type)
        if field.name == "granularity"
        else pa.array(column, type=field.type, from_pandas=True)
        for column, field in zip(columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_parquet(job: _Job, out: IO[Any] | str | os.PathLike[str]) -> int:
    import pyarrow.parquet as pq

    if isinstance(out, io.TextIOBase):
        raise InvalidSpec("format parquet: write it to a path or a binary file, not text")
    table = parquet_table(job)
    pq.write_table(table, str(out) if isinstance(out, str | os.PathLike) else out)
    return int(table.num_rows)


def export_series(
    job_id: uuid.UUID | str,
    fmt: str,
    out: IO[Any] | str | os.PathLike[str],
    *,
    granularity: str | None = None,
) -> int:
    """Write the job's series to ``out`` as ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise InvalidSpec(f"format: must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if granularity is not None and granularity not in GRANULARITIES:
        raise InvalidSpec(f"granularity: must be 'step' or 'epoch', got '{granularity}'")
    job = _load(job_id, GRANULARITIES if granularity is None else (granularity,))
    if fmt == "parquet":
        return _write_parquet(job, out)
    with _text_sink(out) as sink:
        return _write_csv(job, sink) if fmt == "csv" else _write_json(job, sink)
