"""The tuned lecture preset (LECTURE_TUNED_SPEC) end to end, the way people run it:

- on the cluster (``optbench api`` and ``optbench worker`` processes, PostgreSQL, Redis:
  tests/integration/conftest.py ``cluster``), the whole preset as the web form submits it:
  the trials, then their reruns and one-shot baselines, sent by the worker as a second part;
- on the embedded default through ``optbench demo --tuned``, README's command as written:
  the whole preset again, child processes and all (about 50 s on the cluster and 80 s
  through the demo on the 2-core machine; README's "Tuning studies" has the timing). The
  demo's ``--epochs``/``--trials`` override is tested in tests/unit/test_study.py.

Each checks that the job succeeds, that every one of the eight optimizers has its reruns on
the fresh seeds and its one-shot baseline, that no trial read the test split, that every
stored accuracy is in [0, 1] (tests/invariants.py) and that the report renders with them.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.spec import LECTURE_TUNED_SPEC, JobSpec
from tests.integration.conftest import Cluster
from tests.invariants import assert_stored_metrics_valid

pytestmark = pytest.mark.integration

LABELS = [entry["name"] for entry in LECTURE_TUNED_SPEC["optimizers"]]


def stored_runs(database_url: str, job_id: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT label, role, trial, seed, status, pruned_at_epoch, test_accuracy, "
                    "test_loss, selection_score FROM run WHERE job_id = :job ORDER BY id"
                ),
                {"job": job_id.replace("-", "") if database_url.startswith("sqlite") else job_id},
            ).mappings()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


def check_study(runs: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    """What every finished tuned-preset study holds, whatever its size."""
    job_spec = JobSpec.model_validate(spec)
    assert job_spec.tuning is not None and job_spec.tuning.pruning is not None
    budget, seeds = job_spec.tuning.budget(LABELS[0]), job_spec.rerun_seeds
    assert {run["status"] for run in runs} == {"succeeded"}
    for label in LABELS:
        trials = [r for r in runs if r["role"] == "trial" and r["label"] == label]
        assert sorted(r["trial"] for r in trials) == list(range(budget)), label
        assert all(r["test_accuracy"] is None and r["test_loss"] is None for r in trials)
        assert all(r["selection_score"] is not None for r in trials), label
        # successive halving: at the first rung all but ceil(n / factor) stop
        rungs = job_spec.tuning.pruning.rungs(job_spec.epochs)
        factor = job_spec.tuning.pruning.reduction_factor
        pruned_first = Counter(r["pruned_at_epoch"] for r in trials)[rungs[0]]
        assert pruned_first == budget - math.ceil(budget / factor), label
        reruns = [r for r in runs if r["role"] == "rerun" and r["label"] == label]
        baselines = [r for r in runs if r["role"] == "baseline"]
        baselines = [r for r in baselines if r["label"] == f"{label}:one-shot"]
        assert sorted(r["seed"] for r in reruns) == seeds, label
        assert sorted(r["seed"] for r in baselines) == seeds, label
        best = max(trials, key=lambda r: r["selection_score"])
        assert {r["trial"] for r in reruns} == {best["trial"]}
        for run in reruns + baselines:
            assert 0.0 <= run["test_accuracy"] <= 1.0 and run["test_loss"] > 0


def check_report(html: str, budget: int) -> None:
    """The report's embedded chart data draws every run, tuned and one-shot, and the study:
    a tuneability point per trial of each optimizer on a log axis for the learning rate, and
    an expected-best-of-k curve (quasirandom) over its completed trials."""
    found = re.search(r'<script type="application/json" id="ob-chart-data">(.*?)</script>', html)
    assert found, "the report has no chart data"
    data = json.loads(found.group(1))
    labels = {run["label"] for run in data["runs"]}
    assert set(LABELS) | {f"{label}:one-shot" for label in LABELS} <= labels
    study = data["study"]
    assert study["phase"] == "reruns" and study["axes"]["lr"]["scale"] == "log"
    assert [entry["label"] for entry in study["entries"]] == LABELS
    for entry in study["entries"]:
        trials = entry["trials"]
        assert len(trials) == budget and all(t["score"] is not None for t in trials)
        completed = [t for t in trials if t["status"] == "completed"]
        assert entry["best_final"] and entry["best_trial"] in {t["trial"] for t in trials}
        assert len(entry["expected_best"]) == len(completed) > 0


def check_summary(summary: dict[str, Any]) -> None:
    """Ranked on the reruns, a one-shot row beside each tuned one."""
    rows = {row["label"]: row for row in summary["optimizers"]}
    for label in LABELS:
        assert rows[label]["role"] == "tuned" and rows[label]["rank"] is not None
        assert rows[f"{label}:one-shot"]["role"] == "one-shot"
        assert 0.0 <= rows[label]["test_accuracy"] <= 1.0


def test_the_tuned_preset_runs_on_postgres_redis_and_a_worker(cluster: Cluster) -> None:
    """The whole preset, as GET /v1/presets gives it to the form."""
    spec = cluster.client.get("/v1/presets").json()["lecture-tuned"]
    assert spec == LECTURE_TUNED_SPEC
    job = cluster.run_job(spec, timeout=600)
    assert job["status"] == "succeeded", job["error"]
    runs = stored_runs(cluster.database_url, job["id"])
    assert len(runs) == 8 * 16 + 8 * 5 * 2  # trials, reruns, baselines
    check_study(runs, spec)
    assert_stored_metrics_valid(cluster.database_url)

    summary = cluster.client.get(f"/v1/jobs/{job['id']}/summary")
    assert summary.status_code == 200, summary.text
    check_summary(summary.json())
    report = cluster.client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    check_report(report.text, budget=16)


def test_optbench_demo_tuned_on_the_embedded_default(tmp_path: Path) -> None:
    """README's ``optbench demo --tuned``, verbatim."""
    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path), "OPTBENCH_WORKER_METRICS_PORT": "0"}
    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--tuned"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"^job ([0-9a-f-]{36}): succeeded$", result.stdout, re.MULTILINE)
    assert found, result.stdout
    job_id = found.group(1)
    assert "(128 trials; the best of each is rerun afterwards)" in result.stdout
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    table = [line.split()[0] for line in lines[header + 2 :] if line.strip()]
    assert set(LABELS) <= set(table), result.stdout  # a row per optimizer (tuned, at least)
    assert f"GET /v1/jobs/{job_id}/trials" in result.stdout

    database = f"sqlite:///{tmp_path / 'optbench.db'}"
    runs = stored_runs(database, job_id)
    assert len(runs) == 8 * 16 + 8 * 5 * 2  # trials, reruns, baselines
    check_study(runs, LECTURE_TUNED_SPEC)
    assert_stored_metrics_valid(database)

    report = tmp_path / "report.html"
    written = subprocess.run(
        [sys.executable, "-m", "services.cli", "report", job_id, "-o", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr
    check_report(report.read_text(), budget=16)


def test_demo_trials_without_tuned_is_a_usage_mistake(tmp_path: Path) -> None:
    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--trials", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--trials needs --tuned" in result.stderr
    assert not (tmp_path / "optbench.db").exists()  # refused before anything started
