"""A real Prometheus scrapes the API and a worker while the lecture job trains.

Asserts through Prometheus's HTTP query API that throughput (``rate()`` of the samples
counter) was positive during the job and that the steps-to-target histogram holds one
observation per run that reached the target, and checks both /metrics pages for every
documented metric and for labels that never carry an id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.spec import LECTURE_SPEC
from tests.integration.conftest import Cluster
from tests.support import free_port, require_binary

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]

API_METRICS = {
    "optbench_jobs_submitted_total",
    "optbench_jobs_rejected_total",
    "optbench_jobs",
    "optbench_build_info",
    "http_requests_total",
    "http_request_duration_seconds",
}
WORKER_METRICS = {
    "optbench_jobs_finished_total",
    "optbench_job_queue_wait_seconds",
    "optbench_job_duration_seconds",
    "optbench_runs_active",
    "optbench_train_steps_total",
    "optbench_train_samples_total",
    "optbench_train_step_duration_seconds",
    "optbench_steps_to_target",
    "optbench_time_to_target_seconds",
    "optbench_runs_diverged_total",
    "optbench_metric_rows_written_total",
    "optbench_metric_rows_deduplicated_total",
    "optbench_metric_write_duration_seconds",
    "optbench_task_redeliveries_total",
    "optbench_build_info",
}
ID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|^\d{3,}$")


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_binary("prometheus", "apt-get install prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: optbench-api
    static_configs: [{{targets: ["127.0.0.1:{cluster.api_port}"]}}]
  - job_name: optbench-worker
    static_configs: [{{targets: ["127.0.0.1:{cluster.worker_metrics_port}"]}}]
""")
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        cluster.wait_for(
            lambda: httpx.get(f"{url}/-/ready").status_code == 200, 60, "Prometheus to start"
        )
        cluster.wait_for(
            lambda: _query(url, 'sum(up{job=~"optbench-.*"})') == [2.0],
            60,
            "Prometheus to scrape the API and the worker",
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _query(url: str, expr: str, at: float | None = None) -> list[float]:
    params = {"query": expr, **({"time": str(at)} if at else {})}
    body = httpx.get(f"{url}/api/v1/query", params=params).json()
    assert body["status"] == "success", body
    return [float(item["value"][1]) for item in body["data"]["result"]]


def test_prometheus_sees_throughput_and_convergence(cluster: Cluster, prometheus: str) -> None:
    spec = {
        **LECTURE_SPEC,
        "epochs": 8,
        "seeds": [0, 1],
        "target": {"metric": "val_accuracy", "value": 0.9},
    }
    spec["optimizers"] = [*LECTURE_SPEC["optimizers"], {"name": "sgd", "lr": 1e6, "label": "boom"}]
    reached_before = sum(_query(prometheus, "sum(optbench_steps_to_target_count)")) or 0.0
    started = time.time()
    job = cluster.run_job(spec)
    finished = time.time()
    assert job["status"] == "succeeded", job["error"]
    time.sleep(3)  # two more scrapes after the end

    body = httpx.get(
        f"{prometheus}/api/v1/query_range",
        params={
            "query": "sum(rate(optbench_train_samples_total[3s]))",
            "start": str(started),
            "end": str(finished + 2),
            "step": "1",
        },
    ).json()
    rates = [float(v) for series in body["data"]["result"] for _, v in series["values"]]
    assert rates and max(rates) > 0, body

    summary = cluster.client.get(f"/v1/jobs/{job['id']}/summary").json()
    reached = sum(int(row["target_reached"].split("/")[0]) for row in summary["optimizers"])
    assert reached > 0
    observed = sum(_query(prometheus, "sum(optbench_steps_to_target_count)"))
    assert observed - reached_before == reached
    by_optimizer = _query(prometheus, 'sum(optbench_steps_to_target_count{optimizer="adagrad"})')
    assert by_optimizer and by_optimizer[0] >= 1
    assert _query(prometheus, 'sum(optbench_runs_diverged_total{optimizer="sgd"})')[0] >= 2


def _families(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_both_metrics_pages_list_the_documented_metrics_without_ids(
    cluster: Cluster, prometheus: str
) -> None:
    cluster.client.post("/v1/jobs", json={"dataset": {"name": "nope"}})  # one rejection
    job = cluster.run_job(
        {  # a small job with a diverging run, so every family has samples
            "dataset": {"name": "iris"},
            "model": {"name": "linear"},
            "epochs": 2,
            "optimizers": [
                {"name": "adam", "lr": 0.1},
                {"name": "sgd", "lr": 1e6, "label": "boom"},
            ],
        }
    )
    assert job["status"] == "succeeded", job["error"]
    api = _families(cluster.client.get("/metrics").text)
    worker = _families(httpx.get(f"http://127.0.0.1:{cluster.worker_metrics_port}/metrics").text)
    # prometheus_client names counter families without _total and info without _info.
    names = lambda fams: {s.name for samples in fams.values() for s in samples}  # noqa: E731
    assert names(api) | set(api) >= API_METRICS, API_METRICS - names(api) - set(api)
    missing = WORKER_METRICS - names(worker) - set(worker)
    assert not missing, missing
    for families in (api, worker):
        for samples in families.values():
            for sample in samples:
                assert not {"job_id", "run_id", "id"} & set(sample.labels), sample
                for value in sample.labels.values():
                    assert not ID_LIKE.search(value), sample
    build = next(s for s in worker["optbench_build_info"] if s.name == "optbench_build_info")
    assert build.labels["torch"].startswith("2.")


# --- issue 16: the API's /metrics behind OPTBENCH_METRICS_TOKEN, scraped with the token ---


def _start_prometheus(binary: str, folder: Path, api_port: int, token: str) -> tuple[Any, str]:
    """A Prometheus whose API job is the repo's (deploy/prometheus/prometheus.yml: its
    authorization block and credentials file name), pointed at ``api_port``."""
    repo = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(job for job in repo["scrape_configs"] if job["job_name"] == "optbench-api")
    job = {**job, "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}
    folder.mkdir()
    (folder / job["authorization"]["credentials_file"]).write_text(token)
    config = folder / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(folder / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def _up(url: str, timeout: float = 30) -> float:
    """``up`` of the API job once Prometheus has scraped it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{url}/-/ready").status_code == 200
            values = _query(url, 'up{job="optbench-api"}') if ready else []
        except httpx.TransportError:
            values = []
        if values:
            return values[0]
        time.sleep(0.5)
    pytest.fail("Prometheus never scraped the API")


def test_prometheus_scrapes_a_token_protected_metrics_page(tmp_path: Path) -> None:
    binary = require_binary("prometheus", "apt-get install prometheus")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTBENCH_")}
    env.update(OPTBENCH_HOME=str(tmp_path / "home"), OPTBENCH_METRICS_TOKEN="tok-9f3a")
    api = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(api_port)],
        env=env,
        stdout=(tmp_path / "api.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    started = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{api_port}/metrics").status_code == 401
        for name, token in (("right", "tok-9f3a"), ("wrong", "nope"), ("none", "")):
            process, url = _start_prometheus(binary, tmp_path / name, api_port, token)
            started.append((name, process, url))
        ups = {name: _up(url) for name, _, url in started}
        assert ups == {"right": 1.0, "wrong": 0.0, "none": 0.0}, ups
    finally:
        for _, process, _ in started:
            process.terminate()
            process.wait(timeout=20)
        api.terminate()
        api.wait(timeout=20)
