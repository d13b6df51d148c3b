"""What the benchmarks share: a scratch PostgreSQL database and a description of the machine."""

from __future__ import annotations

import os
import platform
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

ADMIN_URL = os.environ.get(
    "OPTBENCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def use_database(url: str | None) -> None:
    """Point this process's settings and engine at ``url`` (None: back to the environment)."""
    from services.db.session import reset_engine
    from services.settings import get_settings

    if url is None:
        os.environ.pop("OPTBENCH_DATABASE_URL", None)
    else:
        os.environ["OPTBENCH_DATABASE_URL"] = url
    reset_engine()
    get_settings.cache_clear()


@contextmanager
def scratch_database(admin_url: str) -> Iterator[URL]:
    """A fresh database on the admin URL's server, this process pointed at it; dropped after."""
    admin = make_url(admin_url)
    name = f"optbench_bench_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name)
    try:
        use_database(url.render_as_string(hide_password=False))
        yield url
    finally:
        use_database(None)
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
        print(f"dropped {name}")


def cpu_description() -> str:
    """``host: CPU model, N CPUs (load average a, b, c), Python x.y.z``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs (load average {load}), "
        f"Python {platform.python_version()}"
    )


# --- synthetic MNIST files -----------------------------------------------------------------


def write_synthetic_mnist(folder: Path, samples: int, seed: int = 0) -> None:
    """``<folder>/mnist/`` with the four IDX files workers/engine/datafiles.py reads: 28x28
    uint8 images, each 10 % its class's coarse pattern (7x7 blocks of 4x4 pixels) and 90 %
    uniform noise; one sixth of them in the t10k files. Learnable, but not in one epoch."""
    rng = np.random.default_rng(seed)
    patterns = np.kron(rng.uniform(0, 255, (10, 7, 7)), np.ones((4, 4)))
    root = folder / "mnist"
    root.mkdir(parents=True, exist_ok=True)
    n_test = samples // 6
    for prefix, n in (("train", samples - n_test), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        noise = rng.uniform(0, 255, (n, 28, 28))
        images = np.clip(0.1 * patterns[labels] + 0.9 * noise, 0, 255).astype(np.uint8)
        header = struct.pack(">IIII", 2051, n, 28, 28)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        labels_header = struct.pack(">II", 2049, n)
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(labels_header + labels.tobytes())
