"""The table formats: CSV and parquet (one long table) and JSON (the metrics endpoint's
columnar shape). ``services.export``'s docstring defines them."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from services.errors import InvalidSpec
from services.exports.data import (
    COLUMNS,
    RESULT_COLUMNS,
    RUN_COLUMNS,
    VALUE_COLUMNS,
    ExportJob,
    clean,
)


def rows(job: ExportJob) -> Iterator[tuple[Any, ...]]:
    """The long table: per run, its step rows then its epoch rows."""
    for run in job.runs:
        for granularity, by_run in job.series.items():
            columns = by_run[run.id]
            if not columns:
                continue
            length = len(columns[next(iter(columns))])
            missing = [None] * length
            values = [columns.get(name, missing) for name in ("step", "epoch", *VALUE_COLUMNS)]
            head = (*run.columns, *run.results, granularity)
            for index in range(length):
                yield head + tuple(column[index] for column in values)


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


def write_csv(job: ExportJob, out: IO[Any] | str | os.PathLike[str]) -> int:
    with _text_sink(out) as sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(COLUMNS)
        count = 0
        for row in rows(job):
            writer.writerow(row)  # None is written as an empty field, floats as repr()
            count += 1
        return count


def _metrics_shape(job: ExportJob, granularity: str) -> dict[str, Any]:
    by_run = job.series[granularity]
    return {
        "job_id": job.id,
        "granularity": granularity,
        "runs": [
            {
                **dict(zip(RUN_COLUMNS, run.columns, strict=True)),
                "hyperparameters": run.hyperparameters,
                **dict(zip(RESULT_COLUMNS, run.results, strict=True)),
                "series": by_run[run.id],
            }
            for run in job.runs
        ],
    }


def write_json(job: ExportJob, out: IO[Any] | str | os.PathLike[str]) -> int:
    document = {
        "job_id": job.id,
        "name": job.name,
        "status": job.status,
        "device": job.device,
        "spec": job.spec,
        "summary": job.summary,
        "metrics": {g: _metrics_shape(job, g) for g in job.series},
    }
    with _text_sink(out) as sink:
        json.dump(clean(document), sink, allow_nan=False, ensure_ascii=False)
        sink.write("\n")
    return sum(_points(columns) for by_run in job.series.values() for columns in by_run.values())


def _points(columns: dict[str, list[Any]]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def parquet_table(job: ExportJob) -> Any:
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
            *((name, pa.float64()) for name in RESULT_COLUMNS),
            ("granularity", pa.dictionary(pa.int8(), pa.string())),
            ("step", pa.int64()),
            ("epoch", pa.int64()),
            *((name, pa.float64()) for name in VALUE_COLUMNS),
        ],
        metadata={
            "optbench.job_id": job.id,
            "optbench.spec": json.dumps(clean(job.spec)),
            "optbench.summary": json.dumps(clean(job.summary)),
        },
    )
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    for row in rows(job):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    arrays = [
        pa.array(column, type=pa.string()).dictionary_encode().cast(field.type)
        if field.name == "granularity"
        else pa.array(column, type=field.type, from_pandas=True)
        for column, field in zip(columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(job: ExportJob, out: IO[Any] | str | os.PathLike[str]) -> int:
    import pyarrow.parquet as pq

    if isinstance(out, io.TextIOBase):
        raise InvalidSpec("format parquet: write it to a path or a binary file, not text")
    table = parquet_table(job)
    pq.write_table(table, str(out) if isinstance(out, str | os.PathLike) else out)
    return int(table.num_rows)
