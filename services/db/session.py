"""Engines and sessions. One engine per process, created on first use (never at import), so a
forked Celery worker child builds its own instead of sharing its parent's connections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session

from services.settings import get_settings


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The API and the worker write to one SQLite file from different processes: wait on
        # the lock instead of failing, and let readers work while a writer writes (WAL).
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # A database that drops packets instead of refusing must become an error (the API's 503)
    # within seconds, not a request that hangs until the kernel gives up.
    connect_args = (
        {"connect_timeout": 5} if make_url(url).get_backend_name() == "postgresql" else {}
    )
    # hide_parameters: an error's message (logged, or in a traceback) never holds the values
    return create_engine(
        url, pool_pre_ping=pre_ping, connect_args=connect_args, hide_parameters=True
    )


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache(maxsize=1)
def get_writer_engine() -> Engine:
    """The engine of the SQL sink's writer (workers/sinks/sql.py) on PostgreSQL: the same
    database, its own pool, no pre-ping. The ping is a round trip (``BEGIN``, ``SELECT 1``)
    before each transaction, for a writer that commits several times a second: on a loaded
    machine it cost the sink's 1,000-row flush a few percent (docs/performance.md, "Storing
    every step"). A pooled connection that died meanwhile fails the write's first statement
    instead: a transient error, which the writer retries on a new connection. SQLite: the
    process's engine (one file, one pool)."""
    url = get_settings().resolved_database_url
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine()
    return make_engine(url, pre_ping=False)


def reset_engine() -> None:
    """Forget this process's engines (after a fork, or when tests change the settings)."""
    for cached in (get_writer_engine, get_engine):
        if cached.cache_info().currsize:
            cached().dispose(close=False)
        cached.cache_clear()


@contextmanager
def unit_of_work(engine: Engine | None = None) -> Iterator[Session]:
    """One use case, one transaction: commits when the block ends, rolls back on an error.
    ``engine``: another than the process's (the metric writer's, ``get_writer_engine``)."""
    session = Session(engine or get_engine(), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
