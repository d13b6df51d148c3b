"""Fixtures of the unit tests that run on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from services.db.models import ApiKey, Dataset
from services.db.session import unit_of_work
from services.queue import reset_client
from services.settings import get_settings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The embedded SQLite file, or PostgreSQL (the broker: files in a temporary home)."""
    if request.param == "sqlite":
        request.getfixturevalue("embedded_home")
    else:
        request.getfixturevalue("postgres_db")
        monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path / "home"))
        get_settings.cache_clear()
        reset_client()
    yield str(request.param)
    if request.param == "postgresql":  # postgres_db empties the job tables (and their children)
        with unit_of_work() as session:
            session.execute(delete(Dataset))
            session.execute(delete(ApiKey))
