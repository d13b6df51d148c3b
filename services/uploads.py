"""Uploaded data sets: parse an NPZ or CSV upload, check it, store it normalised in the database.

Whatever was uploaded, ``Dataset.data`` holds one normalised NPZ that any worker can load by id
(``load_dataset_bytes``), with numpy alone (``np.load(..., allow_pickle=False)``):

- ``x``: float32, N x D (higher-dimensional samples are flattened);
- ``y``: int64 class indices (classification) or float32 targets (regression);
- ``classes``: the original class names or values, ``classes[y[i]]`` (classification only);
- ``task``: a 0-d str array, ``"classification"`` or ``"regression"``.

No FastAPI here (routes call these use cases) and no torch (the API process must not need it).
"""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy
from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from services.db.models import Dataset
from services.db.session import unit_of_work
from services.errors import InvalidSpec, NotFound, PayloadTooLarge
from services.settings import get_settings
from services.spec.text import control_character_error
from services.upload_formats import (
    FINITE_MESSAGE,
    FLOAT32_MAX,
    MAX_CLASSES,
    Describe,
    TextLabels,
    Upload,
    listing,
    out_of_range,
)
from services.upload_formats.csv_format import csv_header, parse_csv
from services.upload_formats.npz_format import parse_npz

__all__ = ["MAX_CLASSES", "Describe", "Upload", "store_upload"]

FORMATS = ("npz", "csv")
TASKS = ("classification", "regression")
MIN_SAMPLES = 10
MIN_PER_CLASS = 2
MAX_NAME = 200  # Dataset.name is String(200)
# An NPZ may be compressed: its arrays may unpack to at most this many times the upload limit.
NPZ_EXPANSION = 8
ROWS_PER_CHECK = 1 << 16  # rows checked finite at a time (no mask as large as x)
WRITE_BYTES = 1 << 20  # of an array written into the stored NPZ at a time


def too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    """The 413 for an upload over ``limit`` bytes (``size`` when it is known)."""
    what = f"the upload is {size} bytes" if size is not None else "the upload is too large"
    return PayloadTooLarge(
        f"{what}; the limit is {limit} bytes (OPTBENCH_MAX_UPLOAD_BYTES): "
        "upload fewer samples or features",
        limit_bytes=limit,
    )


# --- use cases ----------------------------------------------------------------------------


def store_upload(
    name: str | None,
    filename: str | None,
    content: Upload | bytes,
    *,
    label_column: str | None = None,
    task: str | None = None,
    owner: str = "local",
) -> Dataset:
    """Parse, check and store one upload, as ``owner``'s; the format comes from the file
    name's suffix.

    ``content`` is best the route's spooled file as an ``Upload``: parsed from its stream, the
    upload is never all in memory (bytes work too). Raises ``PayloadTooLarge`` (413) over
    ``max_upload_bytes`` and ``InvalidSpec`` (422) with a message naming what to change
    otherwise.

    Memory at the insert, the peak: the stored NPZ and the database driver's copy of it
    (sqlite3 and psycopg copy a parameter into their own buffers), nothing else of the
    upload's size: the parsed arrays are released once the NPZ is written.
    """
    settings = get_settings()
    limit = settings.max_upload_bytes
    content = Upload.of(content)
    if len(content) > limit:
        raise too_large(limit, len(content))
    for field, value in (("name", name), ("label_column", label_column), ("task", task)):
        problem = control_character_error(value or "")
        if problem is not None:  # (PostgreSQL refuses NUL in text: once a 500)
            raise InvalidSpec(f"{field}: {problem}")
    source_format = upload_format(filename)
    name = (name or "").strip() or (filename or "").strip()
    problem = control_character_error(name)
    if problem is not None:
        raise InvalidSpec(f"name: the file name, the default name, {problem}; or pass name")
    if len(name) > MAX_NAME:
        raise InvalidSpec(f"name: at most {MAX_NAME} characters, got {len(name)}")
    if task is not None and task not in TASKS:
        raise InvalidSpec(f"task: must be 'classification' or 'regression', got '{task}'")

    x: np.ndarray
    y: np.ndarray | TextLabels
    if source_format == "npz":
        x, y, describe = parse_npz(content, limit * NPZ_EXPANSION, NPZ_EXPANSION)
        label = "y"
    else:
        columns = settings.max_upload_columns
        if not label_column:
            raise InvalidSpec(
                "label_column: required for a CSV upload; name the column that holds the "
                f"label, one of: {listing(csv_header(content, columns))}"
            )
        x, y, describe = parse_csv(content, label_column, columns)
        label = f"label column '{label_column}'"

    normalised = normalise(x, y, task, label=label, describe=describe)
    del x, y  # (memory: from here on only the stored arrays, then only their NPZ, are held)
    dataset = Dataset(
        owner=owner,
        name=name,
        source_format=source_format,
        task=normalised.task,
        n_samples=normalised.x.shape[0],
        n_features=normalised.x.shape[1],
        n_classes=None if normalised.classes is None else len(normalised.classes),
        size_bytes=len(content),
    )
    data = normalised.to_npz()
    del normalised
    with unit_of_work() as session:
        insert(session, dataset, data)
    return dataset


def insert(session: Session, dataset: Dataset, data: memoryview) -> None:
    """Add ``dataset`` with ``data`` as its stored NPZ, copying it no more than the database
    needs: on SQLite the row is inserted holding zeros (``zeroblob``, no memory) and the NPZ
    written into it a slice at a time (sqlite3's incremental blob I/O): a plain insert held
    two copies (the bound parameter and the record SQLite builds), the NPZ's size each.
    PostgreSQL's driver copies a parameter once, into the message it sends."""
    if session.get_bind().dialect.name != "sqlite":
        dataset.data = data  # type: ignore[assignment]
        session.add(dataset)
        session.flush()
        return
    dataset.data = func.zeroblob(len(data))
    session.add(dataset)
    session.flush()
    rowid = session.scalar(
        select(literal_column("rowid")).select_from(Dataset).where(Dataset.id == dataset.id)
    )
    connection = session.connection().connection.driver_connection
    with connection.blobopen("dataset", "data", rowid) as blob:  # type: ignore[union-attr]
        for start in range(0, len(data), WRITE_BYTES):
            blob.write(data[start : start + WRITE_BYTES])


def get_dataset(dataset_id: uuid.UUID | str, *, owner: str | None = None) -> Dataset:
    """One data set's metadata (``data`` stays unloaded). With ``owner``, another owner's
    data set is not found, exactly as one that does not exist."""
    with unit_of_work() as session:
        return owned_dataset(session, dataset_id, owner)


def list_datasets(
    limit: int = 50, offset: int = 0, *, owner: str | None = None
) -> tuple[list[Dataset], int]:
    """Data sets (of ``owner``, or everyone's when None), newest first, without their data,
    and how many there are in all."""
    with unit_of_work() as session:
        query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id)
        count = select(func.count()).select_from(Dataset)
        if owner is not None:
            query, count = query.where(Dataset.owner == owner), count.where(Dataset.owner == owner)
        items = list(session.scalars(query.limit(limit).offset(offset)))
        return items, int(session.scalar(count) or 0)


def owned_dataset(session: Session, dataset_id: uuid.UUID | str, owner: str | None) -> Dataset:
    """The data set in the caller's session; NotFound when it does not exist or, with
    ``owner``, belongs to someone else (the same answer: existence is not revealed)."""
    dataset = session.get(Dataset, _key(dataset_id))
    if dataset is None or (owner is not None and dataset.owner != owner):
        raise NotFound(f"no dataset with id '{dataset_id}'")
    return dataset


def load_dataset_bytes(session: Session, dataset_id: uuid.UUID | str) -> bytes:
    """The normalised NPZ of one data set (for the worker adapter, in the caller's session)."""
    key = _key(dataset_id)
    data = session.scalar(select(Dataset.data).where(Dataset.id == key))
    if data is None:
        raise NotFound(f"no dataset with id '{dataset_id}'")
    return bytes(data)


def upload_format(filename: str | None) -> str:
    """``npz`` or ``csv``, from the file name's suffix (any case)."""
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
    if suffix not in FORMATS:
        raise InvalidSpec(
            f"file: the file name must end in .npz (arrays x and y) or .csv (a header row "
            f"and a label column), got '{filename or ''}'"
        )
    return suffix


def _key(dataset_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return dataset_id if isinstance(dataset_id, uuid.UUID) else uuid.UUID(str(dataset_id))
    except ValueError:
        raise NotFound(f"no dataset with id '{dataset_id}'") from None


# --- normalising and checking -------------------------------------------------------------


class Normalised:
    """Checked arrays, ready to store."""

    def __init__(self, x: np.ndarray, y: np.ndarray, task: str, classes: np.ndarray | None):
        self.x, self.y, self.task, self.classes = x, y, task, classes

    def to_npz(self) -> memoryview:
        """The NPZ to store (what ``numpy.savez`` writes): the buffer it was written to, not a
        copy (the database drivers take any bytes-like object)."""
        arrays: dict[str, Any] = {"x": self.x, "y": self.y, "task": np.array(self.task)}
        if self.classes is not None:
            arrays["classes"] = self.classes
        # Sized once, up front: a BytesIO growing as the archive is written copies itself
        # at each step (old and new buffer at once, 2x the NPZ). The rest is cut at the end.
        estimate = sum(np.asarray(a).nbytes for a in arrays.values()) + (64 << 10)
        buffer = io.BytesIO()
        buffer.seek(estimate)
        buffer.write(b"\0")
        buffer.seek(0)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    _write_npy(member, np.asarray(array))
        buffer.truncate()
        return buffer.getbuffer()


def _write_npy(fp: IO[bytes], array: np.ndarray) -> None:
    """``array`` as a .npy file, as ``numpy.save`` writes it, its data in slices of
    ``WRITE_BYTES``: numpy's own writer copies up to 16 MiB at a time to a file object that
    is not a real file (``tobytes`` of each chunk), beside the array and the NPZ."""
    header = npy.header_data_from_array_1_0(array)
    data = array.T if header["fortran_order"] else array  # C-contiguous in the file's order
    if array.dtype.hasobject or not data.flags.c_contiguous or array.nbytes <= WRITE_BYTES:
        npy.write_array(fp, array, allow_pickle=False)  # small (or a layout numpy handles)
        return
    npy.write_array_header_1_0(fp, header)
    raw = data.reshape(-1).view(np.uint8)  # a view: no copy
    for start in range(0, raw.size, WRITE_BYTES):
        fp.write(raw[start : start + WRITE_BYTES].data)


def normalise(
    x: np.ndarray,
    y: np.ndarray | TextLabels,
    task: str | None,
    *,
    label: str,
    describe: Describe,
) -> Normalised:
    """Decide the task, check the data's sanity and convert to the stored dtypes.

    ``y`` is numeric, str (text that is all numbers counts as numbers) or ``TextLabels``;
    ``label`` names it in messages; ``describe`` names a value of x. ``x`` already float32
    is not copied (the parsers give it so).
    """
    n = x.shape[0]
    if n < MIN_SAMPLES:
        raise InvalidSpec(f"the data set needs at least {MIN_SAMPLES} samples, got {n}")
    if x.shape[1] < 1:
        raise InvalidSpec("the data set needs at least one feature")
    for start in range(0, n, ROWS_PER_CHECK):
        rows = x[start : start + ROWS_PER_CHECK]
        bad = out_of_range(rows)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            value = float(rows[row, col])
            raise InvalidSpec(f"{FINITE_MESSAGE}: {describe(start + row, col)} is {value}")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32, copy=False)

    if isinstance(y, np.ndarray) and y.dtype.kind == "U":
        try:  # text labels that are all numbers are numbers
            y = y.astype(np.float64)
        except ValueError:
            names, codes = np.unique(y, return_inverse=True)
            y = TextLabels(names, codes.reshape(-1))
    if isinstance(y, TextLabels):
        return _text_classes(x32, y, task, label)
    y = y.astype(np.float64)
    nonfinite = np.flatnonzero(~np.isfinite(y))
    if nonfinite.size:
        i = int(nonfinite[0])
        raise InvalidSpec(f"{label}: must be finite, sample {i} is {float(y[i])}")
    # whole numbers (small enough for int64 and float64 to agree) are class labels
    integral = bool(np.all(y == np.round(y)) and np.abs(y).max() < 2**53)
    values = y.astype(np.int64) if integral else y

    if task is None:
        few = integral and np.unique(values).size <= MAX_CLASSES
        task = "classification" if few else "regression"
    if task == "regression":
        if np.abs(y).max() > FLOAT32_MAX:
            raise InvalidSpec(f"{label}: targets must lie within float32 range")
        return Normalised(x32, y.astype(np.float32), "regression", None)
    classes, index, counts = np.unique(values, return_inverse=True, return_counts=True)
    return _classification(x32, classes, index.reshape(-1), counts, label)


def _text_classes(x32: np.ndarray, y: TextLabels, task: str | None, label: str) -> Normalised:
    if task == "regression":
        example = next(str(v) for v in y.names if not _is_float(v))
        raise InvalidSpec(
            f"{label}: regression needs numeric targets, got text such as '{example}'; "
            "set task=classification or fix the values"
        )
    classes, to_class = np.unique(y.names, return_inverse=True)
    index = to_class.reshape(-1)[y.codes]
    counts = np.bincount(index, minlength=classes.size)
    return _classification(x32, classes, index, counts, label)


def _classification(
    x32: np.ndarray, classes: np.ndarray, index: np.ndarray, counts: np.ndarray, label: str
) -> Normalised:
    if classes.size > MAX_CLASSES:
        raise InvalidSpec(
            f"{label}: classification allows at most {MAX_CLASSES} classes, got {classes.size}; "
            "set task=regression if the label is a quantity"
        )
    if classes.size < 2:
        raise InvalidSpec(f"{label}: classification needs at least 2 classes, got {classes.size}")
    rare = classes[counts < MIN_PER_CLASS]
    if rare.size:
        shown = ", ".join(repr(c.item()) for c in rare[:10])
        more = f" and {rare.size - 10} more" if rare.size > 10 else ""
        raise InvalidSpec(
            f"{label}: classification needs at least {MIN_PER_CLASS} samples of every class; "
            f"these have fewer: {shown}{more} (add samples, drop them, or set task=regression)"
        )
    return Normalised(x32, index.astype(np.int64), "classification", classes)


def _is_float(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True
