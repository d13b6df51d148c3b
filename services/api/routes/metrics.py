"""GET /v1/jobs/{job_id}/metrics: a job's series, raw or downsampled, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from services import jobs
from services.api.errors import problems
from services.api.schemas import MAX_QUERY_INT, MetricsOut, RunSeries
from services.api.security import Owner
from services.db.metric_queries import MAX_LIMIT, MAX_POINTS, SeriesQuery
from services.db.models import EPOCH_FIELDS, STEP_FIELDS
from services.export import RUN_COLUMNS, run_columns

router = APIRouter(prefix="/v1/jobs", tags=["metrics"])

_CSV_ROWS_PER_CHUNK = 5000


class MetricsPage(MetricsOut):
    """Columns per run. Raw points: ``series = {"step": [...], "loss": [...], ...}``.
    Downsampled (``max_points``): per bucket ``step`` (its largest step) and ``step_min``,
    and for each field ``f`` its value at that step (``f``), ``f_min`` and ``f_max``."""

    max_points: int | None = None
    next_cursor: str | None = None


def _split(values: list[str] | None) -> list[str] | None:
    """``a,b`` and ``x=a&x=b`` alike."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@router.get(
    "/{job_id}/metrics",
    operation_id="getMetrics",
    response_model=MetricsPage,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **problems(404)},
)
def get_metrics(
    job_id: uuid.UUID,
    owner: Owner,
    granularity: Literal["step", "epoch"] = "step",
    runs: Annotated[
        list[str] | None,
        Query(description="Run ids or labels, comma-separated or repeated (default: all)."),
    ] = None,
    fields: Annotated[
        list[str] | None,
        Query(
            description="Fields, comma-separated or repeated (default: all). Per step: "
            f"{', '.join(STEP_FIELDS)}. Per epoch: {', '.join(EPOCH_FIELDS)}."
        ),
    ] = None,
    from_step: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="First step (inclusive).")
    ] = None,
    to_step: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="Last step (inclusive).")
    ] = None,
    max_points: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_POINTS,
            description="Downsample to at most this many points per run: per bucket the "
            "last value and the minimum and maximum of each field, so spikes survive.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_LIMIT, description="Raw points per page (default: all of them)."),
    ] = None,
    cursor: Annotated[
        str | None, Query(description="A previous page's next_cursor: the page after it.")
    ] = None,
    output: Annotated[
        Literal["json", "csv"],
        Query(
            alias="format",
            description="csv: one row per point: whose it is (job_id, job_name, dataset, "
            "model, run_id, label, optimizer, seed, hyperparameters as compact JSON; as in "
            "`optbench export`), then the columns.",
        ),
    ] = "json",
) -> Response:
    """Series per run, columnar: ``{"step": [...], "loss": [...], ...}``.

    Downsampled, buckets are of equal step width per run. On PostgreSQL, a step series
    without from_step/to_step of a run at least 64 * max_points steps long is read from the
    64-step rollup blocks, so its bucket edges fall on block boundaries (steps 1, 65, 129,
    ...) instead of where the exact row formula puts them (widths then differ by up to one
    block); the values per bucket (last, minimum, maximum) are exact for the steps it
    holds. See services.db.metric_queries.
    """
    query = SeriesQuery(
        granularity=granularity,
        fields=_split(fields),
        from_step=from_step,
        to_step=to_step,
        max_points=max_points,
        limit=limit,
        cursor=cursor,
    )
    if output == "csv":
        return _csv(job_id, query, _split(runs), owner)
    result = jobs.metrics(job_id, query, _split(runs), owner=owner)
    # Built without validation (the values come from the database as they are) and
    # serialized by pydantic-core directly, NaN and infinities as null as before: a million
    # points take a fraction of the time FastAPI's generic encoder needs.
    body = MetricsPage.model_construct(
        job_id=result.job.id,
        granularity=granularity,
        max_points=max_points,
        next_cursor=result.page.next_cursor,
        runs=[
            RunSeries.model_construct(
                run_id=run.id,
                label=run.label,
                optimizer=run.optimizer,
                seed=run.seed,
                series=result.page.columns[run.id],
            )
            for run in result.runs
        ],
    )
    return Response(body.model_dump_json(), media_type="application/json")


def _csv(
    job_id: uuid.UUID, query: SeriesQuery, runs: list[str] | None, owner: str
) -> StreamingResponse:
    result, rows = jobs.metrics_rows(job_id, query, runs, owner=owner)
    header = [*RUN_COLUMNS, *result.page.query.columns]
    about = run_columns(result.job, result.runs)
    headers = {"Content-Disposition": f'attachment; filename="{job_id}-{query.granularity}.csv"'}
    if result.page.next_cursor:
        headers["X-Next-Cursor"] = result.page.next_cursor
    return StreamingResponse(
        _csv_chunks(header, about, rows), media_type="text/csv", headers=headers
    )


def _csv_chunks(
    header: list[str], about: dict[int, tuple[Any, ...]], rows: Iterable[Sequence[Any]]
) -> Iterator[str]:
    """CSV text in chunks of rows (floats as Python writes them: inf and nan included)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    chunk: list[Sequence[Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _CSV_ROWS_PER_CHUNK:
            writer.writerows((*about[r[0]], *r[1:]) for r in chunk)
            chunk.clear()
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows((*about[r[0]], *r[1:]) for r in chunk)
    yield buffer.getvalue()
