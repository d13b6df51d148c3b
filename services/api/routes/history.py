"""GET /v1/optimizers/{label}/history: one optimizer label's results over the caller's jobs
on one data set (services/comparison.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services import comparison
from services.api.compare_schemas import HistoryOut
from services.api.errors import problems
from services.api.security import Owner

router = APIRouter(prefix="/v1/optimizers", tags=["jobs"])


@router.get(
    "/{label}/history",
    operation_id="getOptimizerHistory",
    response_model=HistoryOut,
    responses=problems(404),
)
def optimizer_history(
    owner: Owner,
    label: Annotated[
        str,
        Path(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9_.:+\-]+$",
            description="an optimizer label as jobs' summaries name it (the entry's label, "
            "else its optimizer name; a study's baseline <label>:one-shot), e.g. adam",
        ),
    ],
    dataset: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            description="a catalog data set's name (e.g. digits), or an uploaded data set's id",
            openapi_examples={"digits": {"summary": "scikit-learn's digits", "value": "digits"}},
        ),
    ],
    model: Annotated[
        str | None,
        Query(max_length=64, description="only jobs of this model (the spec's model.name)"),
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=comparison.MAX_HISTORY_LIMIT, description="the newest jobs, at most"),
    ] = comparison.HISTORY_LIMIT,
) -> dict[str, Any]:
    """The label's summary row in each of the caller's succeeded jobs on the data set (and
    model), newest first: job id, name, creation time, model, epochs, the label's
    hyperparameters and its row (best validation score, final train loss, steps to target,
    reached, rank out of ``labels``); and over them the number of jobs, the median, minimum
    and maximum of the key metrics and how often the label ranked first. Other owners' jobs
    are never read; another owner's uploaded data set is a 404, as for
    ``GET /v1/datasets/{id}``; an unknown data set or model name a 422 listing the known."""
    query = comparison.HistoryQuery(label=label, dataset=dataset, model=model, limit=limit)
    return comparison.history(query, owner=owner)
