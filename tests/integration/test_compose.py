"""Validate the deployment files: docker-compose.yml (+ GPU override) and Prometheus config.

Needs the `docker-compose` and `promtool` binaries (no Docker daemon). Without them the
tests skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import require_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = ["-f", "docker-compose.yml"]
GPU = [*BASE, "-f", "docker-compose.gpu.yml"]
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _compose_config(files: list[str]) -> dict:
    """Services of the merged, interpolated compose configuration."""
    compose = require_binary("docker-compose", "apt-get install docker-compose")
    return yaml.safe_load(_run(compose, *files, "config").stdout)["services"]


def _gpu_devices(service: dict) -> list[dict]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices", []) if d.get("driver") == "nvidia"]


@pytest.mark.parametrize("files", [BASE, GPU], ids=["base", "base+gpu"])
def test_compose_config_is_valid(files: list[str]) -> None:
    compose = require_binary("docker-compose", "apt-get install docker-compose")
    _run(compose, *files, "config", "-q")


def test_compose_services() -> None:
    services = _compose_config(BASE)

    healthcheck = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(healthcheck)

    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name

    mounts = " ".join(str(v) for v in services["prometheus"]["volumes"])
    assert "prometheus.yml:/etc/prometheus/prometheus.yml" in mounts

    # Scalable with `--scale worker=N`: no fixed name, no host port bindings.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]

    assert _gpu_devices(services["worker"]) == []


def test_gpu_override_reserves_nvidia_devices() -> None:
    worker = _compose_config(GPU)["worker"]
    devices = _gpu_devices(worker)
    assert devices, "docker-compose.gpu.yml should reserve NVIDIA devices for worker"
    assert "gpu" in devices[0]["capabilities"]
    assert "/whl/cu" in worker["build"]["args"]["TORCH_INDEX_URL"]


def test_prometheus_config_is_valid() -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    _run(promtool, "check", "config", PROMETHEUS_CONFIG)


def test_promtool_accepts_the_recording_and_alerting_rules() -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    output = _run(promtool, "check", "rules", "deploy/prometheus/rules.yml").stdout
    assert "SUCCESS" in output


def _exposed_names() -> set[str]:
    """Every metric name the API and worker processes expose (services/telemetry.py), plus
    what Prometheus and the HTTP instrumentation add."""
    from prometheus_client import REGISTRY

    import services.telemetry  # noqa: F401  (registers the metrics)

    suffix = {"counter": "_total", "info": "_info"}
    names = {"up", "http_requests_total", "http_request_duration_seconds", "optbench_jobs"}
    for family in REGISTRY.collect():
        names.add(family.name + suffix.get(family.type, ""))
    return names


def _metric_names(expr: str) -> set[str]:
    import re

    expr = re.sub(r"[a-z_]*:[a-z0-9_:]+", "", expr)  # recording rules' names (level:metric:op)
    names = set(re.findall(r"\b(optbench_[a-z_]+|http_[a-z_]+)\b", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def test_rules_and_dashboard_only_use_metrics_that_exist() -> None:
    rules = yaml.safe_load((REPO_ROOT / "deploy/prometheus/rules.yml").read_text())
    recorded = {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/optbench.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exposed = _exposed_names()
    for expr in expressions:
        unknown = {n for n in _metric_names(expr) if n not in exposed and n not in recorded}
        assert not unknown, f"{expr}: {unknown}"
    import re

    used_records = {
        name for expr in expressions for name in re.findall(r"[a-z_]+:[a-z0-9_:]+", expr)
    }
    assert used_records <= recorded, used_records - recorded
    panels = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "queue", "outcomes", "steps to target"):
        assert topic in panels


def test_compose_provisions_grafana_with_the_dashboard() -> None:
    services = _compose_config(BASE)
    volumes = " ".join(str(v) for v in services["grafana"]["volumes"])
    assert "deploy/grafana/provisioning" in volumes and "deploy/grafana/dashboards" in volumes
    prometheus_volumes = " ".join(str(v) for v in services["prometheus"]["volumes"])
    assert "rules.yml" in prometheus_volumes
