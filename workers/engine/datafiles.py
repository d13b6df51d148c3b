"""Readers of the standard files of MNIST, Fashion-MNIST (IDX) and CIFAR-10 (python batches).

They read what the user placed in the configured data folder (nothing is downloaded) and
say, when files are missing, which ones, where, and where to get them.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_SOURCES = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of "
    "http://yann.lecun.com/exdb/mnist/)",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
    "(see https://github.com/zalandoresearch/fashion-mnist)",
}
_IMAGES, _LABELS = 2051, 2049  # IDX magic numbers: unsigned bytes, 3 and 1 dimensions


def read_idx_set(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The four IDX files (each plain or gzipped) of ``<folder>/<name>/``, as N x 1 x 28 x 28."""
    root = folder / name
    found = {file: _plain_or_gz(root / file) for file in _IDX_FILES}
    missing = [file for file, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"{name} needs the IDX files {', '.join(_IDX_FILES)} (each may be gzipped, "
            f"ending in .gz) in {root}; missing: {', '.join(missing)}. Download them from "
            f"{_IDX_SOURCES[name]} and place them in {root}"
        )
    train_x, train_y, test_x, test_y = (path for path in found.values() if path is not None)
    x = np.concatenate([_read_idx(train_x, _IMAGES), _read_idx(test_x, _IMAGES)])
    y = np.concatenate([_read_idx(train_y, _LABELS), _read_idx(test_y, _LABELS)])
    if len(x) != len(y):
        raise ValueError(f"{root}: {len(x)} images but {len(y)} labels")
    return x[:, None], y


def _plain_or_gz(path: Path) -> Path | None:
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if gz.is_file() else None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file: a big-endian header (magic number, then one uint32 per dimension) and
    unsigned bytes."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of magic number {magic} (found {found})")
    header = 4 + 4 * raw[3]
    shape = struct.unpack(f">{raw[3]}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise ValueError(
            f"{path}: shape {shape} needs {math.prod(shape)} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


_CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FOLDER = _CIFAR_FOLDER  # where read_cifar looks (workers/engine/data_cache.py signs it)
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
# A CIFAR batch is a dict of numpy arrays and lists: nothing else may be unpickled, so a file
# planted in the data folder cannot run code.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"a CIFAR batch may not hold {module}.{name}")
        return super().find_class(module, name)


def read_cifar(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The python version's pickled batches in ``<folder>/cifar-10-batches-py/``,
    as N x 3 x 32 x 32."""
    root = folder / _CIFAR_FOLDER
    missing = [file for file in _CIFAR_FILES if not (root / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"cifar10 needs the python batches {', '.join(_CIFAR_FILES)} in {root}; missing: "
            f"{', '.join(missing)}. Download https://www.cs.toronto.edu/~kriz/"
            f"cifar-10-python.tar.gz and extract it in {folder} (it unpacks to {_CIFAR_FOLDER}/)"
        )
    xs, ys = zip(*(_read_batch(root / file) for file in _CIFAR_FILES), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as stream:
        batch = _BatchUnpickler(stream, encoding="bytes").load()
    x = np.asarray(batch[b"data"], dtype=np.uint8)
    y = np.asarray(batch[b"labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape != (len(y), 3 * 32 * 32):
        raise ValueError(
            f"{path}: data of shape {x.shape} for {len(y)} labels, expected ({len(y)}, 3072)"
        )
    return x.reshape(-1, 3, 32, 32), y
