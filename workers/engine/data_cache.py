"""The data sets a worker process has loaded, kept for its next jobs on the same data.

A small job spends as long loading its data as training (scikit-learn's digits: reading the
bundled file, splitting and standardising, tens of milliseconds on the 2-core VM; MNIST-sized
files far more), and a worker process trains one job after another, mostly on the same few
data sets. ``splits`` returns the loaded splits of a ``DatasetConfig`` on a device and dtype,
loading them only the first time: a second job on the same data (the same name, parameters,
fractions and seed) reuses them; any other spec loads its own.

The key is everything the splits depend on: the config's name, parameters, fractions and
seed, the device and the dtype. Where a parameter is not the data itself, the key holds what
it stands for: an upload's bytes by their SHA-256 (another upload is another key), a data
folder by the size and modification time of every file under the data set's subfolder (a
replaced file is another key). The cached tensors are shared by the jobs that use them: the
engine only reads them (batches are index copies; standardising happened before the cache).

At most ``MAX_ENTRIES`` data sets and ``MAX_BYTES`` of tensors stay, the least recently used
going first; a data set larger than ``MAX_BYTES`` is loaded but not kept.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch

from workers.engine import datafiles, datasets
from workers.engine.config import DatasetConfig

MAX_ENTRIES = 4
MAX_BYTES = 1 << 30  # 1 GiB of tensors per worker process

_cache: OrderedDict[Hashable, tuple[datasets.Splits, int]] = OrderedDict()
_lock = threading.Lock()
stats = {"hits": 0, "misses": 0}  # this process's, for tests and benchmarks


def splits(config: DatasetConfig, device: str, dtype: torch.dtype) -> datasets.Splits:
    """``datasets.load(config)`` on ``device`` in ``dtype``, from this process's cache when
    it has loaded the same data before."""
    key = cache_key(config, device, dtype)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return found[0]
        stats["misses"] += 1
    data = datasets.load(config).to(device, dtype)
    size = nbytes(data)
    if size <= MAX_BYTES:
        with _lock:
            _cache[key] = (data, size)
            while len(_cache) > MAX_ENTRIES or sum(s for _, s in _cache.values()) > MAX_BYTES:
                _cache.popitem(last=False)
    return data


def clear() -> None:
    with _lock:
        _cache.clear()
        stats.update(hits=0, misses=0)


def cache_key(config: DatasetConfig, device: str, dtype: torch.dtype) -> Hashable:
    params = {key: _stands_for(key, value, config.name) for key, value in config.params.items()}
    return (
        config.name,
        json.dumps(params, sort_keys=True, default=str),
        config.val_fraction,
        config.test_fraction,
        config.seed,
        device,
        str(dtype),
    )


def nbytes(data: datasets.Splits) -> int:
    tensors = (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
    return sum(t.element_size() * t.nelement() for t in tensors)


def _stands_for(key: str, value: Any, name: str) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):  # an upload's stored NPZ
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    if key == "folder":
        return [str(value), _files_signature(Path(value), name)]
    return value


def _files_signature(folder: Path, name: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file a file data set may read under ``folder``."""
    signature = []
    for sub in sorted({name, datafiles.CIFAR_FOLDER}):
        root = folder / sub
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    status = path.stat()
                    signature.append((str(path), status.st_size, status.st_mtime_ns))
    return signature
