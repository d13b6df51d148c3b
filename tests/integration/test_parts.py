"""A job split into two parts (workers/parts.py) on ``optbench worker --concurrency 2``: the
parts train in two worker processes at the same time, the job succeeds, and every step row
is stored exactly once.

Its own API and worker on their own Redis database, so no other test's job lands on this
worker (and this worker's two processes on no other test's metrics port)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from services.spec import LECTURE_SPEC
from tests.integration.conftest import REDIS_URL, Cluster, running_cluster
from workers.parts import cpu_cores

pytestmark = pytest.mark.integration

EPOCHS = 100  # long enough for the second part to start while the first still trains


@pytest.fixture(scope="module")
def two_process_cluster(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/14"
    with running_cluster(
        postgres_url,
        tmp_path_factory,
        redis_url=redis_url,
        worker_args=("--concurrency", "2", "--parts", "2"),
    ) as cluster:
        yield cluster


def test_two_parts_train_at_once_in_two_processes(two_process_cluster: Cluster) -> None:
    cluster = two_process_cluster
    job = cluster.run_job({**LECTURE_SPEC, "epochs": EPOCHS})
    assert job["status"] == "succeeded", job["error"]
    job_id = job["id"]

    log = cluster.logs[1].read_text()
    threads = max(1, cpu_cores() // 2)  # the worker's cores, shared by two parts
    assert f"job {job_id}: 2 parts x {threads} thread" in log, log[-3000:]
    starts = re.findall(
        rf"job {job_id} part (\d)/2: runs \[([\d, ]+)\], {threads} threads?, pid (\d+)", log
    )
    assert sorted(number for number, _, _ in starts) == ["1", "2"], log[-3000:]
    pids = {number: pid for number, _, pid in starts}
    assert pids["1"] != pids["2"]  # two worker processes
    part_of = {int(i): number for number, listed, _ in starts for i in listed.split(", ")}
    for number, pid in pids.items():
        assert f"job {job_id} part {number}/2 done, pid {pid}" in log

    engine = create_engine(cluster.database_url)
    with engine.connect() as connection:
        runs = connection.execute(
            text("""
            SELECT r.id, r.label, r.total_steps, r.started_at, r.finished_at,
                   count(s.step), count(DISTINCT s.step), min(s.step), max(s.step)
            FROM run r LEFT JOIN step_metric s ON s.run_id = r.id
            WHERE r.job_id = :job
            GROUP BY r.id ORDER BY r.id
        """),
            {"job": job_id},
        ).all()
    engine.dispose()
    assert [run.label for run in runs] == [o["name"] for o in LECTURE_SPEC["optimizers"]]
    for run in runs:
        steps = EPOCHS if run.label == "gd" else EPOCHS * 17  # 1,077 samples / 64
        assert (run[2], run[5], run[6], run[7], run[8]) == (steps, steps, steps, 1, steps)

    # The parts' runs trained at the same time: some run of part 1 was still training when
    # a run of part 2 started, and the other way round.
    assert sorted(part_of) == [run.id for run in runs]  # each run in one part
    intervals = {
        number: (
            min(r.started_at for r in runs if part_of[r.id] == number),
            max(r.finished_at for r in runs if part_of[r.id] == number),
        )
        for number in ("1", "2")
    }
    (start_1, end_1), (start_2, end_2) = intervals["1"], intervals["2"]
    assert start_1 < end_2 and start_2 < end_1, intervals
