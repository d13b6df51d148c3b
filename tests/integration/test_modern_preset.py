"""The modern preset (MODERN_SPEC: AdamW, Schedule-Free AdamW, Lion, Prodigy, SOAP on
MNIST-1D, tuned) end to end on the cluster (``optbench api`` and ``optbench worker``,
PostgreSQL, Redis), at a reduced budget, with whichever of the packages are installed: the
worker publishes its plugin optimizers, GET /v1/presets offers the preset with those, the
API validates them against the worker's catalog, the worker trains them (fused where they
step per member), and the study's reruns and baselines are stored with valid numbers."""

from __future__ import annotations

from typing import Any

import pytest

from services.spec import MODERN_SPEC, modern_spec
from tests.integration.conftest import Cluster
from tests.integration.test_study_cluster import stored_runs
from tests.invariants import assert_stored_metrics_valid

pytestmark = pytest.mark.integration


def _published(cluster: Cluster) -> list[str]:
    names: list[str] = []

    def found() -> bool:
        listed = cluster.client.get("/v1/catalog").json()["plugin_optimizers"]
        names[:] = [entry["name"] for entry in listed if not entry["refused"]]
        return bool(names)

    cluster.wait_for(found, 90, "the worker's catalog of plugin optimizers")
    return names


def reduced(spec: dict[str, Any]) -> dict[str, Any]:
    """A small budget: 3 epochs, 3 trials each, one rerun seed, 2,000 samples."""
    return {
        **spec,
        "dataset": {**spec["dataset"], "n_samples": 2000},
        "epochs": 3,
        "tuning": {**spec["tuning"], "trials": 3, "rerun_seeds": 1},
    }


def test_the_modern_preset_trains_on_the_cluster(cluster: Cluster) -> None:
    available = _published(cluster)
    preset = cluster.client.get("/v1/presets").json()["modern"]
    assert preset == modern_spec(available)
    labels = [entry["label"] for entry in preset["optimizers"]]
    # With the [more-optimizers] extra (CI installs it) every method has an implementation.
    assert labels == [entry["label"] for entry in MODERN_SPEC["optimizers"]]
    job = cluster.run_job(reduced(preset), timeout=600)
    assert job["status"] == "succeeded", job["error"]
    runs = stored_runs(cluster.database_url, job["id"])
    assert {run["status"] for run in runs} == {"succeeded"}
    for label in labels:
        trials = [r for r in runs if r["role"] == "trial" and r["label"] == label]
        reruns = [r for r in runs if r["role"] == "rerun" and r["label"] == label]
        baselines = [r for r in runs if r["label"] == f"{label}:one-shot"]
        assert len(trials) == 3 and len(reruns) == 1 and len(baselines) == 1, label
        for run in reruns + baselines:
            assert 0.0 <= run["test_accuracy"] <= 1.0 and run["test_loss"] > 0
    # The plugin runs are stored under their qualified names and trained by their classes.
    stored = cluster.client.get(f"/v1/jobs/{job['id']}").json()["runs"]
    by_label = {run["label"]: run for run in stored}
    for entry in preset["optimizers"]:
        assert by_label[f"{entry['label']}:one-shot"]["optimizer"] == entry["name"]
    assert_stored_metrics_valid(cluster.database_url)
    summary = cluster.client.get(f"/v1/jobs/{job['id']}/summary")
    assert summary.status_code == 200
    rows = {row["label"]: row for row in summary.json()["optimizers"]}
    assert all(rows[label]["role"] == "tuned" for label in labels)
