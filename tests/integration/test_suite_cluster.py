"""The built-in suite end to end at a reduced budget, the ways people run it:

- on the cluster (``optbench api`` and ``optbench worker`` processes, PostgreSQL, Redis:
  tests/integration/conftest.py ``cluster``), through ``optbench suite lecture --url``
  (shrunk): every child study succeeds, every t(s, w) of the scores is recomputed from
  the stored epoch rows (the first epoch reaching the target, the fastest trial), then r,
  rho, B and the speedup from those t's, and the report renders; deleting the suite deletes
  its jobs;
- on the embedded default through ``optbench suite lecture``, README's command, shrunk.

About 25 s each on the 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.spec.suite import LECTURE_SUITE, SuiteSpec, shrunk
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

SMALL = shrunk(LECTURE_SUITE, epochs=2, trials=2, rerun_seeds=1, studies=2)
LABELS = [entry["name"] for entry in LECTURE_SUITE["optimizers"]]


def stored_trial_times(database_url: str, job_id: str, target: dict[str, Any]) -> dict[str, Any]:
    """Per label: each trial's steps at the end of the first epoch reaching the target
    (None: never, or it diverged), from the stored rows; and each rerun's epoch."""
    column = "distance" if target["metric"] == "distance" else target["metric"]
    higher = column.endswith("accuracy")
    engine = create_engine(database_url)
    trials: dict[str, list[float | None]] = {}
    reruns: dict[str, list[float | None]] = {}
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                text("SELECT id, label, role, diverged FROM run WHERE job_id = :job"),
                {"job": job_id},
            ).mappings()
            for run in list(runs):
                rows = connection.execute(
                    text(
                        f"SELECT epoch, step, {column} AS value FROM epoch_metric "
                        "WHERE run_id = :run ORDER BY epoch"
                    ),
                    {"run": run["id"]},
                ).mappings()
                hit = None
                for row in rows:
                    value = row["value"]
                    if value is not None and (
                        value >= target["value"] if higher else value <= target["value"]
                    ):
                        hit = row
                        break
                if run["diverged"]:
                    hit = None
                if run["role"] == "trial":
                    trials.setdefault(run["label"], []).append(hit and float(hit["step"]))
                elif run["role"] == "rerun":
                    reruns.setdefault(run["label"], []).append(hit and float(hit["epoch"]))
    finally:
        engine.dispose()
    return {"trials": trials, "reruns": reruns}


def check_document(document: dict[str, Any], spec: dict[str, Any]) -> None:
    """What every scores document holds, recomputed from its own t's."""
    parsed = SuiteSpec.model_validate(spec)
    assert document["optimizers"] == LABELS
    assert [w["name"] for w in document["workloads"]] == [w.name for w in parsed.workloads]
    assert "2c90454" in document["definition"]["source"]
    cells = {(c["optimizer"], c["workload"]): c for c in document["cells"]}
    assert len(cells) == len(LABELS) * len(parsed.workloads)
    r_max = document["r_max"]
    for workload in document["workloads"]:
        name = workload["name"]
        times = [cells[label, name]["t"] for label in LABELS]
        finite = [t for t in times if t is not None]
        best = min(finite) if finite else None
        for label, t in zip(LABELS, times, strict=True):
            cell = cells[label, name]
            assert cell["solved_by_anyone"] is (best is not None)
            if t is None or best is None:
                assert cell["r"] is None
            else:
                assert cell["r"] == pytest.approx(t / best) and cell["r"] >= 1.0
            studies = [math.inf if x is None else x for x in cell["t_per_study"]]
            median = statistics.median(studies)
            assert (None if math.isinf(median) else median) == t
        if best is not None:
            assert min(cells[label, name]["r"] or math.inf for label in LABELS) == 1.0
    names = [w["name"] for w in document["workloads"]]
    tau, rho = document["profile"]["tau"], document["profile"]["rho"]
    assert tau[0] == 1.0 and tau[-1] == r_max and tau == sorted(tau)
    for row in document["table"]:
        label = row["optimizer"]
        ratios = [cells[label, name]["r"] for name in names]
        finite_r = [r for r in ratios if r is not None]
        expected_rho = [sum(r <= t for r in finite_r) / len(names) for t in tau]
        assert rho[label] == pytest.approx(expected_rho)
        assert all(a <= b for a, b in zip(rho[label], rho[label][1:], strict=False))
        expected_b = sum(max(0.0, r_max - r) for r in finite_r) / (len(names) * (r_max - 1))
        assert row["score"] == pytest.approx(expected_b) and 0.0 <= row["score"] <= 1.0
        assert row["solved"] == len(finite_r)
        logs = []
        for workload in document["workloads"]:
            miss = workload["miss_value"]
            own = cells[label, workload["name"]]["t"]
            ref = cells[document["reference"], workload["name"]]["t"]
            logs.append(math.log((own if own is not None else miss) / (ref or miss)))
        assert row["geomean_speedup"] == pytest.approx(math.exp(statistics.fmean(logs)))
    scores = [row["score"] for row in document["table"]]
    assert scores == sorted(scores, reverse=True)


def test_optbench_suite_lecture_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    report = tmp_path / "suite.html"
    result = subprocess.run(
        [
            sys.executable, "-m", "services.cli", "suite", "lecture",
            "--url", f"http://127.0.0.1:{cluster.api_port}",
            "--epochs", "2", "--trials", "2", "--reruns", "1", "--studies", "2",
            "--json", "-o", str(report),
        ],
        env={k: v for k, v in os.environ.items() if k != "OPTBENCH_API_KEY"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    state = cluster.client.get(f"/v1/suites/{document['suite_id']}").json()
    assert state["status"] == "succeeded", state
    assert len(state["jobs"]) == 2 * len(SMALL["workloads"])
    assert {job["status"] for job in state["jobs"]} == {"succeeded"}
    assert document == {
        **cluster.client.get(f"/v1/suites/{state['id']}/scores").json(),
        "wall_seconds": document["wall_seconds"],
    }
    check_document(document, SMALL)
    suite = state
    # every t recomputed from the stored rows: per study its fastest trial, then the median
    cells = {(c["optimizer"], c["workload"]): c for c in document["cells"]}
    for workload in document["workloads"]:
        assert [job["study"] for job in workload["jobs"]] == [0, 1]
        stored = [
            stored_trial_times(cluster.database_url, job["job_id"], workload["target"])
            for job in workload["jobs"]
        ]
        for label in LABELS:
            per_study = []
            for study in stored:
                trials = study["trials"][label]
                assert len(trials) == SMALL["tuning"]["trials"]
                per_study.append(min((t for t in trials if t is not None), default=math.inf))
            cell = cells[label, workload["name"]]
            assert cell["t_per_study"] == [None if math.isinf(t) else t for t in per_study]
            median = statistics.median(per_study)
            assert cell["t"] == (None if math.isinf(median) else median)
            reruns = [e for study in stored for e in study["reruns"].get(label, [])]
            assert cell["speed_reruns"] == len(reruns)  # none where every trial diverged
            epochs = [e for e in reruns if e is not None]
            speed = cell["speed_epochs"]
            assert speed == (pytest.approx(statistics.fmean(epochs)) if epochs else None)
        assert workload["budget"] >= 2  # the longest trial: 2 epochs of mini-batches
    page = cluster.client.get(f"/v1/suites/{suite['id']}/report")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert all(label in page.text for label in LABELS)
    # The report draws the scores it embeds (the charts: tests/e2e/test_suite_charts.py).
    embedded = re.search(
        r'<script type="application/json" id="ob-suite-data">(.*?)</script>', page.text
    )
    assert embedded is not None
    assert json.loads(embedded.group(1)) == {
        k: v for k, v in document.items() if k != "wall_seconds"
    }
    assert "mountSuiteCharts" in page.text

    # The CLI's -o file is the same page, rendered at another moment.
    def undated(html: str) -> str:
        return re.sub(r"report generated [^<]*", "", html)

    assert undated(report.read_text()) == undated(page.text)
    child = state["jobs"][0]["job_id"]
    assert cluster.client.delete(f"/v1/jobs/{child}").status_code == 409  # the suite's
    deleted = cluster.client.delete(f"/v1/suites/{suite['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["jobs"] == 2 * len(SMALL["workloads"])
    assert cluster.client.get(f"/v1/jobs/{child}").status_code == 404
    assert cluster.client.get(f"/v1/suites/{suite['id']}").status_code == 404


def test_optbench_suite_lecture_on_the_embedded_default(tmp_path: Path) -> None:
    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path), "OPTBENCH_WORKER_METRICS_PORT": "0"}
    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL", "OPTBENCH_API_URL"):
        env.pop(name, None)
    report = tmp_path / "suite.html"
    command = [
        "suite",
        "lecture",
        "--epochs",
        "1",
        "--trials",
        "1",
        "--reruns",
        "1",
        "--studies",
        "1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *command, "--json", "-o", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "succeeded"
    check_document(document, shrunk(LECTURE_SUITE, epochs=1, trials=1, rerun_seeds=1, studies=1))
    assert all(label in report.read_text() for label in LABELS)
    assert (tmp_path / "optbench.db").exists()
