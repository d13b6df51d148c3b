"""What the benchmarks share: a scratch PostgreSQL database and a description of the machine."""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
