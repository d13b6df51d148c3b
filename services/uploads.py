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

import contextlib
import csv
import io
import uuid
import zipfile
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import Dataset
from services.db.session import unit_of_work
from services.errors import InvalidSpec, NotFound, PayloadTooLarge
from services.settings import get_settings

FORMATS = ("npz", "csv")
TASKS = ("classification", "regression")
MIN_SAMPLES = 10
MIN_PER_CLASS = 2
MAX_CLASSES = 1000
MAX_NAME = 200  # Dataset.name is String(200)
# An NPZ may be compressed: its arrays may unpack to at most this many times the upload limit.
NPZ_EXPANSION = 8
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    content: bytes,
    *,
    label_column: str | None = None,
    task: str | None = None,
    owner: str = "local",
) -> Dataset:
    """Parse, check and store one upload, as ``owner``'s; the format comes from the file
    name's suffix.

    Raises ``PayloadTooLarge`` (413) over ``max_upload_bytes`` and ``InvalidSpec`` (422) with a
    message naming what to change otherwise.
    """
    limit = get_settings().max_upload_bytes
    if len(content) > limit:
        raise too_large(limit, len(content))
    source_format = upload_format(filename)
    name = (name or "").strip() or (filename or "").strip()
    if len(name) > MAX_NAME:
        raise InvalidSpec(f"name: at most {MAX_NAME} characters, got {len(name)}")
    if task is not None and task not in TASKS:
        raise InvalidSpec(f"task: must be 'classification' or 'regression', got '{task}'")

    if source_format == "npz":
        x, y, describe = _parse_npz(content, limit * NPZ_EXPANSION)
        label = "y"
    else:
        if not label_column:
            columns = _header(content)
            raise InvalidSpec(
                "label_column: required for a CSV upload; name the column that holds the "
                f"label, one of: {_listing(columns)}"
            )
        x, y, describe = _parse_csv(content, label_column)
        label = f"label column '{label_column}'"

    normalised = normalise(x, y, task, label=label, describe=describe)
    dataset = Dataset(
        owner=owner,
        name=name,
        source_format=source_format,
        task=normalised.task,
        n_samples=normalised.x.shape[0],
        n_features=normalised.x.shape[1],
        n_classes=None if normalised.classes is None else len(normalised.classes),
        size_bytes=len(content),
        data=normalised.to_npz(),
    )
    with unit_of_work() as session:
        session.add(dataset)
        session.flush()
    return dataset


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

Describe = Callable[[int, int], str]  # (sample, feature) -> where that value came from


class Normalised:
    """Checked arrays, ready to store."""

    def __init__(self, x: np.ndarray, y: np.ndarray, task: str, classes: np.ndarray | None):
        self.x, self.y, self.task, self.classes = x, y, task, classes

    def to_npz(self) -> bytes:
        arrays: dict[str, Any] = {"x": self.x, "y": self.y, "task": np.array(self.task)}
        if self.classes is not None:
            arrays["classes"] = self.classes
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()


def normalise(
    x: np.ndarray, y: np.ndarray, task: str | None, *, label: str, describe: Describe
) -> Normalised:
    """Decide the task, check the data's sanity and convert to the stored dtypes.

    ``y`` is numeric or str (text that is all numbers counts as numbers); ``label`` names it
    in messages; ``describe`` names a value of x.
    """
    n = x.shape[0]
    if n < MIN_SAMPLES:
        raise InvalidSpec(f"the data set needs at least {MIN_SAMPLES} samples, got {n}")
    if x.shape[1] < 1:
        raise InvalidSpec("the data set needs at least one feature")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    bad = ~np.isfinite(x32)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidSpec(
            f"features must be finite numbers within float32 range: {describe(row, col)} "
            f"is {float(x[row, col])}"
        )

    if y.dtype.kind == "U":  # text labels that are all numbers are numbers
        with contextlib.suppress(ValueError):
            y = y.astype(np.float64)
    numeric = y.dtype.kind in "biuf"
    if numeric:
        y = y.astype(np.float64)
        nonfinite = np.flatnonzero(~np.isfinite(y))
        if nonfinite.size:
            i = int(nonfinite[0])
            raise InvalidSpec(f"{label}: must be finite, sample {i} is {float(y[i])}")
    # whole numbers (small enough for int64 and float64 to agree) are class labels
    integral = numeric and bool(np.all(y == np.round(y)) and np.abs(y).max() < 2**53)
    values = y.astype(np.int64) if integral else y

    if task is None:
        few = integral and np.unique(values).size <= MAX_CLASSES
        task = "classification" if not numeric or few else "regression"
    if task == "regression":
        if not numeric:
            example = next(v for v in y if not _is_float(v))
            raise InvalidSpec(
                f"{label}: regression needs numeric targets, got text such as '{example}'; "
                "set task=classification or fix the values"
            )
        if np.abs(y).max() > _FLOAT32_MAX:
            raise InvalidSpec(f"{label}: targets must lie within float32 range")
        return Normalised(x32, y.astype(np.float32), "regression", None)

    classes, index, counts = np.unique(values, return_inverse=True, return_counts=True)
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
    return Normalised(x32, index.reshape(-1).astype(np.int64), "classification", classes)


# --- NPZ ----------------------------------------------------------------------------------


def _parse_npz(content: bytes, max_unpacked: int) -> tuple[np.ndarray, np.ndarray, Describe]:
    try:
        members = {
            info.filename: info.file_size
            for info in zipfile.ZipFile(io.BytesIO(content)).infolist()
        }
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InvalidSpec(
            "file: not a readable NPZ archive; write it with numpy.savez(path, x=..., y=...)"
        ) from None
    missing = [key for key in ("x", "y") if f"{key}.npy" not in members]
    if missing:
        held = sorted(m.removesuffix(".npy") for m in members)
        raise InvalidSpec(
            f"file: the NPZ must hold arrays 'x' (features) and 'y' (labels or targets); "
            f"missing {_listing(missing)}, it holds {_listing(held) or 'nothing'}"
        )
    unpacked = members["x.npy"] + members["y.npy"]
    if unpacked > max_unpacked:
        raise PayloadTooLarge(
            f"x and y unpack to {unpacked} bytes; at most {max_unpacked} are accepted "
            f"(the upload limit, OPTBENCH_MAX_UPLOAD_BYTES, times {NPZ_EXPANSION})",
            limit_bytes=max_unpacked,
        )
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise InvalidSpec(
                "file: x and y must be plain numeric (or, for y, string) arrays; object arrays "
                "are not accepted"
            ) from None
        raise InvalidSpec(f"file: the NPZ cannot be read: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise InvalidSpec(f"file: the NPZ cannot be read: {error}") from None

    if x.dtype.kind not in "biuf":
        raise InvalidSpec(f"x: must be numeric (bool, int or float), got dtype {x.dtype}")
    if x.ndim < 2:
        raise InvalidSpec(
            f"x: must be N x D (one row per sample), got shape {x.shape}; "
            "for a single feature use x.reshape(-1, 1)"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise InvalidSpec(f"y: must be 1-D (one label or target per sample), got shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise InvalidSpec(
            f"y: must have one entry per sample of x: x has {x.shape[0]}, y has {y.shape[0]}"
        )
    if y.dtype.kind == "S":
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            raise InvalidSpec("y: byte-string labels must be UTF-8") from None
    if y.dtype.kind not in "biufU":
        raise InvalidSpec(f"y: must hold numbers or strings, got dtype {y.dtype}")
    if y.dtype.kind == "U":
        y = np.char.strip(y)

    shape = x.shape[1:]
    x = x.reshape(x.shape[0], -1)

    def describe(row: int, col: int) -> str:
        at = np.unravel_index(col, shape) if len(shape) > 1 else (col,)
        return f"x[{', '.join(str(i) for i in (row, *at))}]"

    return x, y, describe


# --- CSV ----------------------------------------------------------------------------------


def _text(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidSpec(
            f"file: a CSV must be UTF-8 text; byte {error.start} is not (save it as UTF-8)"
        ) from None


def _header(content: bytes) -> list[str]:
    try:
        row = next(csv.reader(io.StringIO(_text(content), newline="")), [])
    except csv.Error:
        return []
    return [cell.strip() for cell in row]


def _parse_csv(content: bytes, label_column: str) -> tuple[np.ndarray, np.ndarray, Describe]:
    reader = csv.reader(io.StringIO(_text(content), newline=""))
    try:
        header = [cell.strip() for cell in next(reader, [])]
        if not header:
            raise InvalidSpec(
                f"file: the CSV is empty; it needs a header row and at least {MIN_SAMPLES} rows"
            )
        duplicates = sorted({c for c in header if header.count(c) > 1})
        if duplicates:
            raise InvalidSpec(
                f"file: column names must be unique; repeated: {_listing(duplicates)}"
            )
        if label_column not in header:
            raise InvalidSpec(
                f"label_column: the CSV has no column '{label_column}'; "
                f"its columns are: {_listing(header)}"
            )
        li = header.index(label_column)
        features = header[:li] + header[li + 1 :]
        if not features:
            raise InvalidSpec(
                f"file: the CSV needs at least one feature column besides '{label_column}'"
            )
        width = len(header)
        values: array[float] = array("d")
        labels: list[str] = []
        lines: array[int] = array("q")
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                raise InvalidSpec(
                    f"file: line {reader.line_num} has {len(row)} field(s); the header has {width}"
                )
            label = row[li].strip()
            if not label:
                raise InvalidSpec(
                    f"label column '{label_column}': empty on line {reader.line_num}; "
                    "every row needs a label"
                )
            cells = row[:li] + row[li + 1 :]
            try:
                values.extend(map(float, cells))
            except ValueError:
                col = next(i for i, cell in enumerate(cells) if not _is_float(cell))
                raise InvalidSpec(
                    f"column '{features[col]}': must be numeric (only the label column may "
                    f"hold text); line {reader.line_num} has '{cells[col].strip()}'"
                ) from None
            labels.append(label)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise InvalidSpec(
            f"file: the CSV cannot be parsed at line {reader.line_num}: {error}"
        ) from None

    x = np.frombuffer(values, dtype=np.float64).reshape(len(labels), len(features))
    y = np.array(labels, dtype=str)

    def describe(row: int, col: int) -> str:
        return f"column '{features[col]}' on line {lines[row]}"

    return x, y, describe


def _is_float(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _listing(names: Sequence[str], limit: int = 50) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
