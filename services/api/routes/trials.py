"""GET /v1/jobs/{job_id}/trials: a tuning study's trials, a page at a time, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from services.api.errors import problems
from services.api.schemas import MAX_QUERY_INT, TrialOut, TrialPage
from services.api.security import Owner
from services.study.results import TrialListing, list_trials

router = APIRouter(prefix="/v1/jobs", tags=["trials"])

DEFAULT_LIMIT = 100  # JSON pages; CSV gives every trial unless a limit is asked for
MAX_LIMIT = 5000
# The CSV's fixed columns; then one "search.<key>" column per key any entry searches.
CSV_COLUMNS = (
    "run_id",
    "label",
    "optimizer",
    "trial",
    "seed",
    "status",
    "selection_score",
    "rung",
    "steps_trained",
    "total_steps",
)


@router.get(
    "/{job_id}/trials",
    operation_id="listTrials",
    response_model=TrialPage,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **problems(404)},
)
def get_trials(
    job_id: uuid.UUID,
    owner: Owner,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description=f"Trials per page (JSON default {DEFAULT_LIMIT}; CSV default all).",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    output: Annotated[
        Literal["json", "csv"],
        Query(
            alias="format",
            description="csv: one row per trial (run_id, label, optimizer, trial, seed, "
            "status, selection_score, rung, steps_trained, total_steps, one search.<key> "
            "column per searched key, hyperparameters as compact JSON); header "
            "X-Total-Count",
        ),
    ] = "json",
) -> Response:
    """A study's trials in the spec's entry order, then by trial number: sampled values,
    full hyperparameters, selection score (so far, while a trial trains), status
    (completed, pruned, diverged, running, queued; failed or cancelled with their job),
    rung (the epoch that pruned it) and steps trained. 404 for a job without ``tuning``."""
    if output == "csv":
        listing = list_trials(job_id, owner=owner, limit=limit, offset=offset)
        return Response(
            csv_text(listing),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{job_id}-trials.csv"',
                "X-Total-Count": str(listing.total),
            },
        )
    page_size = limit or DEFAULT_LIMIT
    listing = list_trials(job_id, owner=owner, limit=page_size, offset=offset)
    body = TrialPage(
        job_id=listing.job_id,
        selection_metric=listing.selection_metric,
        higher_is_better=listing.higher_is_better,
        sampler=listing.sampler,
        searched=listing.searched,
        items=[TrialOut.model_validate(t.as_dict()) for t in listing.items],
        total=listing.total,
        limit=page_size,
        offset=offset,
    )
    return Response(body.model_dump_json(), media_type="application/json")


def csv_text(listing: TrialListing) -> str:
    """The trials as CSV (floats as Python writes them; empty cells for None)."""
    keys: list[str] = []
    for searched in listing.searched.values():
        keys += [key for key in searched if key not in keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"search.{key}" for key in keys), "hyperparameters"])
    for trial in listing.items:
        row = trial.as_dict()
        writer.writerow(
            [
                *("" if row[c] is None else row[c] for c in CSV_COLUMNS),
                *(trial.values.get(key, "") for key in keys),
                json.dumps(trial.hyperparameters, separators=(",", ":")),
            ]
        )
    return buffer.getvalue()
