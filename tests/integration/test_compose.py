"""Validate the deployment files: docker-compose.yml (+ GPU override) and Prometheus config.

Needs the `docker-compose` and `promtool` binaries (no Docker daemon). Without them the
tests skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

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
