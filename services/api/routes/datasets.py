"""/v1/datasets: upload a data set (NPZ or CSV), list them, inspect one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import Message

from services import jobs, quotas, uploads
from services.api.errors import problems
from services.api.schemas import MAX_QUERY_INT
from services.api.security import Owner
from services.db.models import Dataset
from services.errors import PayloadTooLarge
from services.settings import get_settings

# Room for the multipart framing and the small form fields around the file itself.
FORM_OVERHEAD = 64 * 1024


class _UploadLimitRoute(APIRoute):
    """Reject an upload over the limit before the form is parsed (and spooled to disk).

    From the Content-Length header when there is one, else while the body streams in: past
    ``max_upload_bytes`` plus the form's overhead, the request ends with a 413.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            limit = get_settings().max_upload_bytes
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit + FORM_OVERHEAD:
                raise uploads.too_large(limit, int(length))
            received = 0

            async def receive() -> Message:
                nonlocal received
                message = await request.receive()
                received += len(message.get("body", b""))
                if received > limit + FORM_OVERHEAD:
                    raise uploads.too_large(limit)
                return message

            try:
                return await handler(Request(request.scope, receive))
            except HTTPException as error:  # FastAPI wraps errors raised while parsing the body
                if isinstance(error.__cause__, PayloadTooLarge):
                    raise error.__cause__ from None
                raise

        return limited


router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=_UploadLimitRoute)


class DatasetOut(BaseModel):
    id: uuid.UUID
    name: str
    source_format: str
    task: str
    n_samples: int
    n_features: int
    n_classes: int | None
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetOut:
        return cls(
            id=dataset.id,
            name=dataset.name,
            source_format=dataset.source_format,
            task=dataset.task,
            n_samples=dataset.n_samples,
            n_features=dataset.n_features,
            n_classes=dataset.n_classes,
            size_bytes=dataset.size_bytes,
            created_at=dataset.created_at,
        )


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    total: int
    limit: int
    offset: int


@router.post(
    "",
    operation_id="uploadDataset",
    status_code=201,
    response_model=DatasetOut,
    responses={
        413: {
            "description": "over OPTBENCH_MAX_UPLOAD_BYTES, or past the owner's bytes quota "
            "OPTBENCH_MAX_DATASET_BYTES_PER_OWNER (problem+json)"
        },
        429: {"description": "the owner has OPTBENCH_MAX_DATASETS_PER_OWNER data sets stored"},
    },
)
def upload_dataset(
    file: Annotated[UploadFile, File(description="the data: a .npz (x, y) or a .csv file")],
    response: Response,
    owner: Owner,
    name: Annotated[str | None, Form(description="defaults to the file name")] = None,
    label_column: Annotated[
        str | None, Form(description="CSV: the column that holds the label or target")
    ] = None,
    task: Annotated[
        str | None,
        Form(description="classification or regression; decided from the label when omitted"),
    ] = None,
) -> DatasetOut:
    """Upload a data set, owned by the caller; workers load it by id, and only the caller's
    jobs may name it.

    - **NPZ** (``numpy.savez``): arrays ``x`` (N x D numbers; higher dimensions are flattened)
      and ``y`` (N labels or targets).
    - **CSV**: a header row; ``label_column`` names the label, every other column is a
      numeric feature.

    The task is ``classification`` when the label is text or whole numbers (at most 1000
    distinct values), else ``regression``; pass ``task`` to decide. At least 10 samples, and
    for classification at least 2 classes with 2 samples each. Files over the upload limit
    (``OPTBENCH_MAX_UPLOAD_BYTES``) get a 413; data that does not fit these rules a 422 that
    names what to change.

    Example:

        curl -F file=@train.csv -F label_column=label http://127.0.0.1:8000/v1/datasets
    """
    limit = get_settings().max_upload_bytes
    # The spooled file itself, not its bytes (on disk past 1 MiB): len() is its size.
    content = uploads.Upload(file.file)
    if len(content) > limit:
        raise uploads.too_large(limit)
    quotas.check_upload(owner, len(content))  # before the parse: a refusal costs no parsing
    dataset = uploads.store_upload(
        name,
        file.filename,
        content,
        label_column=label_column or None,
        task=task or None,
        owner=owner,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetOut.of(dataset)


@router.get("", operation_id="listDatasets", response_model=DatasetPage)
def list_datasets(
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
) -> DatasetPage:
    """The caller's data sets, newest first (metadata only)."""
    items, total = uploads.list_datasets(limit, offset, owner=owner)
    return DatasetPage(
        items=[DatasetOut.of(d) for d in items], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{dataset_id}",
    operation_id="getDataset",
    response_model=DatasetOut,
    responses=problems(404),
)
def get_dataset(dataset_id: uuid.UUID, owner: Owner) -> DatasetOut:
    """One data set's metadata."""
    return DatasetOut.of(uploads.get_dataset(dataset_id, owner=owner))


@router.delete(
    "/{dataset_id}",
    operation_id="deleteDataset",
    response_model=DatasetOut,
    responses={
        404: {"description": "no such data set, or another owner's (problem+json)"},
        409: {"description": "a queued or running job uses it (problem+json naming the jobs)"},
    },
)
def delete_dataset(dataset_id: uuid.UUID, owner: Owner) -> DatasetOut:
    """Delete an uploaded data set; the answer is the metadata of what was deleted. A 409
    while a queued or running job uses it; finished jobs that trained on it keep their
    results (and their specs its id). It no longer counts towards the owner's quotas."""
    return DatasetOut.of(jobs.delete_dataset(dataset_id, owner=owner))
