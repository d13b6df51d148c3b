"""A worker process keeps the data sets it loaded (workers/engine/data_cache.py): a second
job on the same data reuses them, another spec loads its own, and what a warm job stores
equals what a cold one stored, field by field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from services.db import store
from services.db.models import EpochMetric, StepMetric
from services.db.session import unit_of_work
from tests.unit.test_execution import SPEC, stored_job
from workers.engine import DatasetConfig, data_cache
from workers.execution import execute_job

TIMES = {"train_seconds", "seconds_to_target"}  # wall-clock: differ from run to run


@pytest.fixture(autouse=True)
def cold_cache() -> None:
    data_cache.clear()


def stored(job_id: str) -> dict[str, Any]:
    """Everything the job stored that does not depend on the clock, in run order."""

    def values(row: Any) -> dict[str, Any]:
        columns = row.__table__.columns.keys()
        return {c: getattr(row, c) for c in columns if c not in TIMES | {"run_id"}}

    def untimed(summary: Any) -> Any:
        if isinstance(summary, dict):
            return {k: untimed(v) for k, v in summary.items() if k not in TIMES}
        if isinstance(summary, list):
            return [untimed(v) for v in summary]
        return summary

    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        runs = [run.id for run in job.runs]
        steps = [
            [values(r) for r in session.scalars(select(StepMetric).where(StepMetric.run_id == i))]
            for i in runs
        ]
        epochs = [
            [values(r) for r in session.scalars(select(EpochMetric).where(EpochMetric.run_id == i))]
            for i in runs
        ]
        outcome = [
            (r.status, r.steps_done, r.diverged, r.test_loss, r.test_accuracy) for r in job.runs
        ]
        return {"steps": steps, "epochs": epochs, "runs": outcome, "summary": untimed(job.summary)}


def test_a_second_job_on_the_same_data_reuses_it_and_stores_the_same(
    embedded_home: Path,
) -> None:
    cold = stored_job()
    assert execute_job(cold) == "succeeded"
    assert data_cache.stats == {"hits": 0, "misses": 1}
    warm = stored_job()
    assert execute_job(warm) == "succeeded"
    assert data_cache.stats == {"hits": 1, "misses": 1}  # loaded once for both
    first, second = stored(cold), stored(warm)
    assert sum(len(rows) for rows in first["steps"]) > 0
    assert second == first  # every stored field of every row, the summary too


def test_another_spec_loads_its_own_data(embedded_home: Path) -> None:
    assert execute_job(stored_job()) == "succeeded"
    other = {**SPEC["dataset"], "seed": 7}
    assert execute_job(stored_job(dataset=other)) == "succeeded"
    assert execute_job(stored_job(dataset={**SPEC["dataset"], "val_fraction": 0.3})) == (
        "succeeded"
    )
    assert data_cache.stats == {"hits": 0, "misses": 3}


def test_the_key_holds_what_the_data_depend_on(tmp_path: Path) -> None:
    def key(**params: Any) -> object:
        return data_cache.cache_key(DatasetConfig("mnist", params), "cpu", torch.float32)

    upload = data_cache.cache_key(DatasetConfig("upload", {"npz": b"one"}), "cpu", torch.float32)
    other = data_cache.cache_key(DatasetConfig("upload", {"npz": b"two"}), "cpu", torch.float32)
    assert upload != other and "one" not in str(upload)  # the bytes by their digest
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"x" * 10)
    before = key(folder=str(tmp_path))
    assert key(folder=str(tmp_path)) == before
    (folder / "train-images-idx3-ubyte").write_bytes(b"y" * 11)  # a replaced file
    os.utime(folder / "train-images-idx3-ubyte", ns=(1, 1))
    assert key(folder=str(tmp_path)) != before
    config = DatasetConfig("digits")
    assert data_cache.cache_key(config, "cpu", torch.float32) != data_cache.cache_key(
        config, "cpu", torch.float64
    )


def test_it_keeps_at_most_max_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_cache, "MAX_ENTRIES", 2)
    configs = [
        DatasetConfig("moons", {"n_samples": 40}, seed=seed, test_fraction=0.25)
        for seed in range(3)
    ]
    for config in configs:
        data_cache.splits(config, "cpu", torch.float32)
    data_cache.splits(configs[2], "cpu", torch.float32)
    assert data_cache.stats == {"hits": 1, "misses": 3}
    data_cache.splits(configs[0], "cpu", torch.float32)  # the least recently used went
    assert data_cache.stats == {"hits": 1, "misses": 4}
