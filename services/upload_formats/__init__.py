"""Parsers of uploaded data sets, one per format: ``npz_format`` and ``csv_format``.

Each reads the upload as an ``Upload`` (the route's spooled file, on disk past 1 MiB, never
its whole bytes in memory) and turns it into float32 features (N x D, checked finite within float32
range), labels (``numeric`` values or ``TextLabels``) and a ``Describe`` that names where a
feature value came from, in time linear in the upload and memory bounded by what it unpacks
to; ``services/uploads.py`` checks the data's sanity and stores it. Every problem with the
upload is an ``InvalidSpec`` (422) or a ``PayloadTooLarge`` (413) naming what to change.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

Describe = Callable[[int, int], str]  # (sample, feature) -> where that value came from
MAX_CLASSES = 1000
FLOAT32_MAX = float(np.finfo(np.float32).max)
FINITE_MESSAGE = "features must be finite numbers within float32 range"


@dataclass(frozen=True)
class TextLabels:
    """Labels that are text, encoded: ``names[codes[i]]`` is sample i's label. Never one
    fixed-width string per sample (one long label would widen every row to its length)."""

    names: np.ndarray  # str, distinct
    codes: np.ndarray  # int, one per sample


def listing(names: Sequence[str], limit: int = 50) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def out_of_range(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are not finite or would not be as float32 (a boolean mask)."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)


class Upload:
    """An uploaded file: a seekable binary stream and its size (``len``), read in pieces.

    The route passes the form's spooled file (Starlette's SpooledTemporaryFile: on disk past
    1 MiB), so that the upload's bytes are never all in memory beside what is parsed from
    them and stored (at the limit they were a third of the API's peak). ``reader()`` gives
    each pass over the file its own position, so passes do not disturb one another.
    """

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        stream.seek(0, os.SEEK_END)
        self.size = stream.tell()
        stream.seek(0)

    @classmethod
    def of(cls, content: bytes | Upload | IO[bytes]) -> Upload:
        """``content`` as an Upload: bytes are read in place (BytesIO shares them)."""
        if isinstance(content, Upload):
            return content
        return cls(io.BytesIO(content) if isinstance(content, bytes | bytearray) else content)

    def __len__(self) -> int:
        return self.size

    def reader(self) -> io.BufferedReader:
        """A buffered reader from the start; closing it leaves the upload open."""
        return io.BufferedReader(_Window(self.stream), buffer_size=1 << 16)


class _Window(io.RawIOBase):
    """A view of a shared stream with a position of its own (each read seeks there first)."""

    def __init__(self, stream: IO[bytes]):
        self._stream, self._position = stream, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset += self._stream.seek(0, os.SEEK_END)
        elif whence == os.SEEK_CUR:
            offset += self._position
        self._position = max(offset, 0)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._stream.seek(self._position)
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)
