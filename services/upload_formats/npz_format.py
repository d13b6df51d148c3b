"""NPZ uploads: exactly the members ``x.npy`` and ``y.npy``, sized from their headers.

An NPZ is a zip archive. The archive's member list is checked first (anything but exactly
``x.npy`` and ``y.npy`` is a 422 naming what it holds: numpy's ``archive["x"]`` would also
load a member named plain ``x``, which escaped the unpacked limit). Then each member's .npy
header (numpy.lib.format) gives its dtype and shape, and so the bytes it unpacks to, shape x
itemsize: the kinds, the shapes and the unpacked limit are checked from the headers, before
any array is allocated. ``x`` is then read in chunks of about 1 MiB straight into float32, so
that the only copy of the features in memory is the one that is stored.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from typing import IO, Any, Literal

import numpy as np
from numpy.lib import format as npy

from services.errors import InvalidSpec, PayloadTooLarge
from services.upload_formats import FINITE_MESSAGE, Describe, Upload, listing, out_of_range

MEMBERS = ["x.npy", "y.npy"]
CHUNK_BYTES = 1 << 20
# What a damaged member or archive raises while it is read.
_READ_ERRORS = (ValueError, TypeError, EOFError, OSError, zipfile.BadZipFile, zlib.error)


class _Header:
    """One member's .npy header and how many bytes of data follow it in the member."""

    def __init__(
        self,
        member: str,
        shape: tuple[int, ...],
        fortran: bool,
        dtype: np.dtype[Any],
        data_bytes: int,
    ):
        self.member, self.shape, self.fortran, self.dtype = member, shape, fortran, dtype
        self.nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        self.data_bytes = data_bytes

    def check_complete(self) -> None:
        """A header that promises more data than its member holds: refused before the
        array is allocated."""
        if self.nbytes > self.data_bytes:
            raise InvalidSpec(
                f"{self.member}: its header declares {self.nbytes} bytes of data, the member "
                f"holds {max(self.data_bytes, 0)}; write the file with numpy.savez"
            )


def parse_npz(
    content: Upload | bytes, max_unpacked: int, expansion: int
) -> tuple[np.ndarray, np.ndarray, Describe]:
    """float32 features N x D (higher-dimensional samples flattened), labels (numbers, or str
    as numpy writes them) and a describer; ``max_unpacked`` bounds x and y together. The
    archive is read from the upload's stream, a member at a time."""
    try:
        archive = zipfile.ZipFile(Upload.of(content).reader())
        names = sorted(info.filename for info in archive.infolist())
    except _READ_ERRORS:
        raise InvalidSpec(
            "file: not a readable NPZ archive; write it with numpy.savez(path, x=..., y=...)"
        ) from None
    with archive:
        if names != MEMBERS:
            raise InvalidSpec(
                "file: an NPZ must hold exactly 'x.npy' and 'y.npy' (x: the features, y: the "
                "labels or targets), as numpy.savez(path, x=..., y=...) writes them; "
                f"it holds {listing(names) or 'nothing'}"
            )
        x_header, y_header = (_header(archive, member) for member in MEMBERS)
        _check(x_header, y_header)
        unpacked = x_header.nbytes + y_header.nbytes
        if unpacked > max_unpacked:
            raise PayloadTooLarge(
                f"x.npy declares {x_header.nbytes} bytes and y.npy {y_header.nbytes}; at most "
                f"{max_unpacked} are accepted unpacked (the upload limit, "
                f"OPTBENCH_MAX_UPLOAD_BYTES, times {expansion}): upload fewer samples or features",
                limit_bytes=max_unpacked,
            )
        x = _read_features(archive, x_header)
        y = _read_labels(archive, y_header)

    shape = x_header.shape[1:]

    def describe(row: int, col: int) -> str:
        at = np.unravel_index(col, shape) if len(shape) > 1 else (col,)
        return f"x[{', '.join(str(int(i)) for i in (row, *at))}]"

    return x, y, describe


def _header(archive: zipfile.ZipFile, member: str) -> _Header:
    try:
        with archive.open(member) as fp:
            shape, fortran, dtype = _read_header(fp)
            data_bytes = archive.getinfo(member).file_size - fp.tell()
    except _READ_ERRORS as error:
        raise InvalidSpec(
            f"{member}: not a .npy array ({error}); write the file with numpy.savez"
        ) from None
    if dtype.hasobject:
        raise InvalidSpec(
            "file: x and y must be plain numeric (or, for y, string) arrays; object arrays "
            "are not accepted"
        )
    return _Header(member, shape, fortran, dtype, data_bytes)


def _read_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = npy.read_magic(fp)
    if version == (1, 0):
        return npy.read_array_header_1_0(fp)
    if version == (2, 0):
        return npy.read_array_header_2_0(fp)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")


def _check(x: _Header, y: _Header) -> None:
    """The kinds and shapes, from the headers alone."""
    if x.dtype.kind not in "biuf":
        raise InvalidSpec(f"x: must be numeric (bool, int or float), got dtype {x.dtype}")
    if len(x.shape) < 2:
        raise InvalidSpec(
            f"x: must be N x D (one row per sample), got shape {x.shape}; "
            "for a single feature use x.reshape(-1, 1)"
        )
    if not (len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[1] == 1)):
        raise InvalidSpec(f"y: must be 1-D (one label or target per sample), got shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise InvalidSpec(
            f"y: must have one entry per sample of x: x has {x.shape[0]}, y has {y.shape[0]}"
        )
    if y.dtype.kind not in "biufSU":
        raise InvalidSpec(f"y: must hold numbers or strings, got dtype {y.dtype}")


def _read_features(archive: zipfile.ZipFile, header: _Header) -> np.ndarray:
    """x as float32, converted chunk by chunk; each chunk is checked finite within float32
    range, so that the message can show the value as uploaded."""
    header.check_complete()
    count, dtype = math.prod(header.shape), header.dtype
    order: Literal["C", "F"] = "F" if header.fortran else "C"
    out = np.empty(count, dtype=np.float32)
    per_chunk = max(1, CHUNK_BYTES // max(dtype.itemsize, 1))
    try:
        with archive.open(header.member) as fp:
            _read_header(fp)
            for start in range(0, count, per_chunk):
                n = min(per_chunk, count - start)
                raw = fp.read(n * dtype.itemsize)
                if len(raw) != n * dtype.itemsize:
                    raise EOFError("the data ends early")
                values = np.frombuffer(raw, dtype=dtype)
                bad = out_of_range(values) if dtype.kind == "f" else None
                if bad is not None and bad.any():
                    i = int(np.argmax(bad))
                    at = np.unravel_index(start + i, header.shape, order=order)
                    raise InvalidSpec(
                        f"{FINITE_MESSAGE}: x[{', '.join(str(int(k)) for k in at)}] is "
                        f"{float(values[i])}"
                    )
                out[start : start + n] = values  # (integers beyond 2^24 round, as astype does)
    except _READ_ERRORS as error:
        raise InvalidSpec(
            f"x.npy: cannot be read ({error}); write the file with numpy.savez"
        ) from None
    # a Fortran-order array of more than two dimensions is copied here, once, to flatten it
    return out.reshape(header.shape, order=order).reshape(header.shape[0], -1)


def _read_labels(archive: zipfile.ZipFile, header: _Header) -> np.ndarray:
    header.check_complete()
    try:
        with archive.open(header.member) as fp:
            y = npy.read_array(fp, allow_pickle=False)
    except _READ_ERRORS as error:
        raise InvalidSpec(
            f"y.npy: cannot be read ({error}); write the file with numpy.savez"
        ) from None
    y = y.reshape(-1)
    if y.dtype.kind == "S":
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            raise InvalidSpec("y: byte-string labels must be UTF-8") from None
    if y.dtype.kind == "U":
        y = np.char.strip(y)
    return y
