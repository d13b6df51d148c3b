"""Where a job's time went (workers/timings.py, ``timings`` on ``GET /v1/jobs/{id}``): the
worker's moments in order between the job's own, the spans between them, and the seconds
in training steps; a job split into parts has one block, merged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from services.api.app import create_app
from tests.support import local_client
from tests.unit.test_execution import FOUR, Sent, stored, stored_job, with_parts
from workers.execution import execute_job
from workers.timings import merge

MOMENTS = ["picked_up_at", "data_ready_at", "first_step_at", "last_step_at", "rows_committed_at"]
SPANS = ["queued", "loading", "starting", "training", "storing", "finishing"]


def timings_of(job_id: str) -> dict[str, object]:
    with local_client(create_app()) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["timings"] is not None
    moments = [job["created_at"], *(job["timings"][key] for key in MOMENTS), job["finished_at"]]
    stamps = [datetime.fromisoformat(moment) for moment in moments]
    assert stamps == sorted(stamps)  # created, the worker's five moments, finished
    timings: dict[str, object] = job["timings"]
    return timings


def test_a_finished_job_says_where_its_time_went(embedded_home: Path) -> None:
    job_id = stored_job()
    with local_client(create_app()) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["timings"] is None  # not picked up yet
    assert execute_job(job_id) == "succeeded"
    timings = timings_of(job_id)
    seconds = timings["seconds"]
    assert isinstance(seconds, dict) and list(seconds) == SPANS
    assert all(value >= 0 for value in seconds.values())
    step_seconds = timings["step_seconds"]
    assert isinstance(step_seconds, float)
    assert 0 < step_seconds <= seconds["training"] + seconds["storing"]


def test_a_job_in_parts_has_one_block_merged_from_its_parts(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_parts(monkeypatch, "2")
    job_id, sent = stored(FOUR), Sent()
    assert execute_job(job_id, send_part=sent) == "running"
    assert sent.run(0) == "succeeded"  # the second part finalises
    timings_of(job_id)  # the moments in order, over both parts


def test_merge_keeps_the_earliest_starts_and_the_latest_ends() -> None:
    one = {"first_step_at": "2026-01-01T00:00:01.000000+00:00", "step_seconds": 2.0}
    two = {
        "first_step_at": "2026-01-01T00:00:00.500000+00:00",
        "last_step_at": "2026-01-01T00:00:03.000000+00:00",
        "step_seconds": 1.5,
    }
    merged = merge(merge({"picked_up_at": "2026-01-01T00:00:00.000000+00:00"}, one), two)
    assert merged == {
        "picked_up_at": "2026-01-01T00:00:00.000000+00:00",
        "first_step_at": "2026-01-01T00:00:00.500000+00:00",
        "last_step_at": "2026-01-01T00:00:03.000000+00:00",
        "step_seconds": 2.0,  # the part that spent most: parts train side by side
    }
