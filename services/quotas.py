"""Per-owner upload quotas: how many data sets an owner keeps stored, and their bytes.

| quota | setting (default) | answer |
|---|---|---|
| data sets stored per owner | ``OPTBENCH_MAX_DATASETS_PER_OWNER`` (100) | 429 |
| bytes of uploads stored per owner | ``OPTBENCH_MAX_DATASET_BYTES_PER_OWNER`` (1 GiB) | 413 |

The bytes are the uploads' ``size_bytes`` (what was uploaded, as ``GET /v1/datasets`` lists
it, so an owner can add them up); what a row stores, the normalised arrays, is bounded per
upload by the upload limits (services/uploads.py). Checked by the upload route once the
upload has arrived and before it is parsed, so a refused upload costs no parsing. Each
refusal is problem+json with a ``quota`` member (setting, maximum, used, requested) and says
what to change: delete data sets (``DELETE /v1/datasets/{id}``) or ask for a larger quota.

Not exact under concurrency, by choice: the check and the insert are separate transactions
(the insert is the upload's own, after the parse), so uploads of one owner that arrive at
the same moment can each pass the check; the quota is then exceeded by at most those
uploads in flight at once, each at most ``OPTBENCH_MAX_UPLOAD_BYTES``.
"""

from __future__ import annotations

from typing import Any

from services.db import store
from services.db.session import unit_of_work
from services.errors import OptbenchError, PayloadTooLarge
from services.settings import Settings, get_settings

_WHAT_TO_DO = "delete data sets you no longer need (DELETE /v1/datasets/{id}) and upload again"


class TooManyDatasets(OptbenchError):
    """The owner keeps as many data sets as ``OPTBENCH_MAX_DATASETS_PER_OWNER`` allows."""

    status, code, title = 429, "quota-exceeded", "Quota exceeded"


class DatasetBytesQuota(PayloadTooLarge):
    """The upload would take the owner's stored uploads past their bytes quota."""

    code, title = "quota-exceeded", "Quota exceeded"


def _quota(setting: str, maximum: int, used: int, requested: int) -> dict[str, Any]:
    return {"setting": setting, "maximum": maximum, "used": used, "requested": requested}


def check_upload(owner: str, size: int, settings: Settings | None = None) -> None:
    """Raise TooManyDatasets or DatasetBytesQuota if storing an upload of ``size`` bytes
    would take ``owner`` past a quota."""
    settings = settings or get_settings()
    with unit_of_work() as session:
        count, total = store.owner_uploads(session, owner)
    if count + 1 > settings.max_datasets_per_owner:
        maximum = settings.max_datasets_per_owner
        raise TooManyDatasets(
            f"you have {count} data sets stored; at most {maximum} per owner "
            f"(OPTBENCH_MAX_DATASETS_PER_OWNER): {_WHAT_TO_DO}",
            quota=_quota("OPTBENCH_MAX_DATASETS_PER_OWNER", maximum, count, 1),
        )
    if total + size > settings.max_dataset_bytes_per_owner:
        maximum = settings.max_dataset_bytes_per_owner
        raise DatasetBytesQuota(
            f"this upload of {size} bytes would bring your stored uploads to {total + size} "
            f"bytes; at most {maximum} bytes per owner (OPTBENCH_MAX_DATASET_BYTES_PER_OWNER, "
            f"{total} used): {_WHAT_TO_DO}",
            quota=_quota("OPTBENCH_MAX_DATASET_BYTES_PER_OWNER", maximum, total, size),
        )
