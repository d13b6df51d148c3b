"""The cluster's own commands as processes: ``optbench migrate``, ``optbench api`` and
``optbench worker`` against real PostgreSQL and Redis, as docker-compose runs them.

Submit the lecture job over HTTP, wait for ``succeeded``, then count the step rows in
PostgreSQL: exactly runs x steps, none missing, none twice.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from services.spec import LECTURE_SPEC
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


def test_lecture_job_lands_every_step_exactly_once_in_postgres(cluster: Cluster) -> None:
    client, postgres_url = cluster.client, cluster.database_url
    steps_before = cluster.worker_total("optbench_train_steps_total")
    finished_before = cluster.worker_total("optbench_jobs_finished_total", status="succeeded")
    job = cluster.run_job({**LECTURE_SPEC, "epochs": 3})
    job_id = job["id"]
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["fraction"] == 1.0

    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("""
            SELECT r.label, r.total_steps, count(s.step), count(DISTINCT s.step),
                   min(s.step), max(s.step)
            FROM run r LEFT JOIN step_metric s ON s.run_id = r.id
            WHERE r.job_id = :job GROUP BY r.id, r.label, r.total_steps ORDER BY r.id
        """),
            {"job": job_id},
        ).all()
        epochs = connection.execute(
            text(
                "SELECT count(*) FROM epoch_metric e JOIN run r ON r.id = e.run_id "
                "WHERE r.job_id = :job"
            ),
            {"job": job_id},
        ).scalar()
    engine.dispose()

    assert [row[0] for row in rows] == [o["name"] for o in LECTURE_SPEC["optimizers"]]
    for label, total, count, distinct, first, last in rows:
        expected = 3 if label == "gd" else 3 * 17  # 1,077 training samples / 64 = 17 batches
        assert (total, count, distinct, first, last) == (
            expected,
            expected,
            expected,
            1,
            expected,
        ), label
    assert epochs == 8 * 3

    series = client.get(f"/v1/jobs/{job_id}/metrics", params={"granularity": "step"}).json()
    assert [len(run["series"]["loss"]) for run in series["runs"]] == [3] + [51] * 7
    summary = client.get(f"/v1/jobs/{job_id}/summary").json()
    assert [row["label"] for row in summary["optimizers"]] == [r[0] for r in rows]

    # The worker's own /metrics counted what it trained.
    assert cluster.worker_total("optbench_train_steps_total") - steps_before == 3 + 7 * 51
    finished = cluster.worker_total("optbench_jobs_finished_total", status="succeeded")
    assert finished - finished_before == 1
