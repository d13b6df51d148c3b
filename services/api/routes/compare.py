"""GET /v1/compare: any of the caller's jobs side by side, their summaries aligned by optimizer
label (services/comparison.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services import comparison
from services.api.compare_schemas import ComparisonOut
from services.api.errors import problems
from services.api.security import Owner

router = APIRouter(prefix="/v1", tags=["jobs"])

# Room for far more ids than allowed, so that too many ids get the message that says how
# many are (services/comparison.py), not a bare length error.
_MAX_LENGTH = 2000


@router.get(
    "/compare",
    operation_id="compareJobs",
    response_model=ComparisonOut,
    responses=problems(404),
)
def compare_jobs(
    owner: Owner,
    jobs: Annotated[
        str,
        Query(
            max_length=_MAX_LENGTH,
            description=f"the job ids, comma-separated (1 to {comparison.MAX_COMPARED_JOBS}, "
            "each once), in the order of the answer's columns",
        ),
    ],
) -> dict[str, Any]:
    """Each job's summary, aligned by optimizer label: one row per label (in the order the
    labels first appear), one cell per job (null where that job has no such label), and
    each job's setup (data set, model, epochs, batch size, target), with the keys whose
    values differ between the jobs in ``differs``. A job that does not exist or is another
    owner's is a 404, as for ``GET /v1/jobs/{id}``; an id that is no UUID, named twice, or
    more ids than allowed are a 422 naming ``jobs``. A running job's cells are its summary
    so far. The curves: each job's ``GET /v1/jobs/{id}/charts``."""
    return comparison.compare(comparison.parse_job_ids(jobs), owner=owner)
