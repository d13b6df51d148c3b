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


def make_engine(url: str) -> Engine:
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
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


def reset_engine() -> None:
    """Forget this process's engine (after a fork, or when tests change the settings)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One use case, one transaction: commits when the block ends, rolls back on an error."""
    session = Session(get_engine(), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
