"""Dump a job's recorded series: ``export_series(job_id, fmt, out)`` for ``optbench export``.

    from services.export import export_series
    export_series(job_id, "csv", "metrics.csv")             # a path (str or Path) ...
    export_series(job_id, "parquet", sys.stdout.buffer)     # ... or an open file
    rows = export_series(job_id, "json", io.StringIO(), granularity="epoch")
    scalars = export_series(job_id, "tensorboard", "runs/")  # a directory
    values = export_series(job_id, "mlflow", "sqlite:///mlflow.db")  # a tracking URI

``fmt`` is ``csv``, ``json``, ``parquet``, ``tensorboard`` or ``mlflow``. For the first
three ``out`` is a path or a writable file: CSV and JSON are text (UTF-8), a text file gets
``str``, a binary one the encoded bytes; parquet needs a binary file or a path. For
``tensorboard`` it is a directory (created if needed), for ``mlflow`` a tracking URI.
``granularity`` is ``"step"``, ``"epoch"`` or ``None`` (both, the default). Returns the
number of rows written (CSV, parquet), of series points (JSON: the same number), of scalar
values (TensorBoard) or of metric values logged (MLflow). Raises ``NotFound`` for an
unknown job and ``InvalidSpec`` for an unknown format or granularity, an ``out`` the format
cannot take, or a tracker package that is not installed (it names the extra to install:
``optbench[tensorboard]``, ``optbench[mlflow]``).

The TensorBoard and MLflow exports (run names, metric names, wall times, hyperparameters,
what exporting twice does) are described in ``services/exports/tensorboard.py`` and
``services/exports/mlflow.py``. The table formats (decided here):

- **csv** and **parquet**: one long table, one row per run and step or epoch, step rows
  first then epoch rows of each run::

      job_id, job_name, dataset, model, run_id, label, optimizer, seed, hyperparameters,
      test_loss, test_accuracy, granularity, step, epoch, <value columns>

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
  schedule); the configured one is ``hyperparameters["lr"]``. ``test_loss`` and
  ``test_accuracy`` (``RESULT_COLUMNS``) are the run's results on the test split, the same
  on each of its rows: the accuracy is R² for regression, and both are empty (null) where
  the run was not evaluated on a test split (landscapes, a diverged or unfinished run).

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
  ``hyperparameters`` as an object) and the ``RESULT_COLUMNS``, so that a run entry taken
  out of its document still says whose it is and how it did on the test split. Non-finite
  numbers are written as null (JSON has no NaN).
"""

from __future__ import annotations

import os
import uuid
from typing import IO, Any, Literal

from services.errors import InvalidSpec
from services.exports.data import (
    COLUMNS,
    KEY_COLUMNS,
    RESULT_COLUMNS,
    RUN_COLUMNS,
    VALUE_COLUMNS,
    hyperparameters_json,
    load,
    run_columns,
)
from services.exports.tables import parquet_table, write_csv, write_json, write_parquet

__all__ = [
    "COLUMNS",
    "FORMATS",
    "GRANULARITIES",
    "KEY_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "VALUE_COLUMNS",
    "export_series",
    "hyperparameters_json",
    "parquet_table",
    "run_columns",
]

Format = Literal["csv", "json", "parquet", "tensorboard", "mlflow"]
FORMATS: tuple[str, ...] = ("csv", "json", "parquet", "tensorboard", "mlflow")
GRANULARITIES: tuple[str, ...] = ("step", "epoch")


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
    granularities = GRANULARITIES if granularity is None else (granularity,)
    if fmt == "tensorboard":
        from services.exports.tensorboard import write_tensorboard

        if not isinstance(out, str | os.PathLike):
            raise InvalidSpec("format tensorboard: out (-o) must name a directory, not a file")
        return write_tensorboard(load(job_id, granularities), out)
    if fmt == "mlflow":
        from services.exports.mlflow import write_mlflow

        if not isinstance(out, str) or not out:
            raise InvalidSpec(
                "format mlflow: out (-o) is a tracking URI such as sqlite:///mlflow.db or "
                f"http://host:5000, got {out!r}"
            )
        return write_mlflow(load(job_id, granularities), out)
    writers = {"csv": write_csv, "json": write_json, "parquet": write_parquet}
    return writers[fmt](load(job_id, granularities), out)
