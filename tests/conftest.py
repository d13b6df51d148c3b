"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.db.session import get_engine, reset_engine
from services.queue import reset_client
from services.settings import get_settings
from tests.invariants import assert_stored_metrics_valid
from tests.support import require_port


def reset_process_state() -> None:
    """Forget cached settings, database engine and Celery client after the environment changed."""
    reset_engine()
    get_settings.cache_clear()
    reset_client()


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, migrated embedded default (SQLite + filesystem broker) in a temporary home."""
    from services.db.migrate import upgrade

    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path / "home"))
    reset_process_state()
    upgrade()
    url = str(get_engine().url)  # what the test stores into, whatever it points at later
    yield tmp_path / "home"
    assert_stored_metrics_valid(url)
    reset_process_state()


POSTGRES_ADMIN_URL = os.environ.get(
    "OPTBENCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated by ``optbench migrate``."""
    from sqlalchemy import create_engine, make_url, text

    admin = make_url(POSTGRES_ADMIN_URL)
    require_port(admin.host or "127.0.0.1", admin.port or 5432, "PostgreSQL")
    name = f"optbench_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    migrate = subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate"],
        env={**os.environ, "OPTBENCH_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    yield url
    try:
        assert_stored_metrics_valid(url)  # what the session's processes stored, too
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def postgres_db(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process's settings point at the session's PostgreSQL database; tables emptied
    before and after."""
    from sqlalchemy import text

    from services.db.session import get_engine

    monkeypatch.setenv("OPTBENCH_DATABASE_URL", postgres_url)
    # In-process tests call as owner 'local' from loopback, which PostgreSQL's default
    # (OPTBENCH_AUTH=required) refuses: they opt in, as an operator would.
    monkeypatch.setenv("OPTBENCH_AUTH", "loopback")
    reset_process_state()
    # Start empty too: the integration tests that ran before share this database.
    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE job, run, step_metric, epoch_metric CASCADE"))
    yield postgres_url
    assert_stored_metrics_valid(postgres_url)
    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE job, run, step_metric, epoch_metric CASCADE"))
    reset_process_state()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on the embedded SQLite file and on PostgreSQL."""
    fixture = "embedded_home" if request.param == "sqlite" else "postgres_db"
    request.getfixturevalue(fixture)
    return str(request.param)
