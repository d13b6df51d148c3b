"""Validate the deployment files: docker-compose.yml (+ GPU override) and Prometheus config.

Needs the `docker-compose` and `promtool` binaries (no Docker daemon). Without them the
tests skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import require_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = ["-f", "docker-compose.yml"]
GPU = [*BASE, "-f", "docker-compose.gpu.yml"]
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"


# What an operator's .env must hold (it has no default): docker-compose refuses without it.
REQUIRED_ENV = {"GRAFANA_ADMIN_PASSWORD": "a-grafana-password"}


def _env(**overrides: str) -> dict[str, str]:
    """The environment compose interpolates from: this one, less any .env-like settings the
    tests assert on, plus the required ones."""
    names = ("GRAFANA_ADMIN_PASSWORD", "OPTBENCH_METRICS_TOKEN", "PROMETHEUS_PORT", "GRAFANA_PORT")
    base = {name: value for name, value in os.environ.items() if name not in names}
    return {**base, **REQUIRED_ENV, **overrides}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env or _env()
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _compose_config(files: list[str], **env: str) -> dict:
    """Services of the merged, interpolated compose configuration."""
    compose = require_binary("docker-compose", "apt-get install docker-compose")
    return yaml.safe_load(_run(compose, *files, "config", env=_env(**env)).stdout)["services"]


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
    # One process per GPU, each pinned to its own (workers/gpus.py).
    assert worker["command"] == ["optbench", "worker", "--gpus", "auto"]


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    """promtool checks that the credentials file exists: the container's entrypoint writes it
    next to the configuration (/etc/prometheus), so the check runs on a copy with one."""
    promtool = require_binary("promtool", "apt-get install prometheus")
    folder = tmp_path / "prometheus"
    shutil.copytree(REPO_ROOT / "deploy/prometheus", folder)
    (folder / "metrics-token").write_text("a-token")
    _run(promtool, "check", "config", str(folder / "prometheus.yml"))


# --- issue 16: nothing of the monitoring is published beyond this machine or open by default


def _published(service: dict) -> list[tuple[str, int]]:
    """``(host address, host port)`` of each published port, from either form `config`
    prints: docker-compose 1.29 writes a bound one as ``127.0.0.1:9090:9090/tcp`` and an
    unbound one in the long syntax, `docker compose` v2 always the long syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host, published, _ = (
                port.rsplit(":", 2) if port.count(":") == 2 else ("0.0.0.0", *port.split(":"))
            )
            found.append((host, int(published)))
        else:
            found.append((str(port.get("host_ip", "0.0.0.0")), int(port["published"])))
    return found


def test_prometheus_and_grafana_are_published_on_loopback_only() -> None:
    """Problem 7: both were published on every host interface (Prometheus has no auth)."""
    services = _compose_config(BASE, PROMETHEUS_PORT="19090", GRAFANA_PORT="13000")
    for name, port in (("prometheus", 19090), ("grafana", 13000)):
        assert _published(services[name]) == [("127.0.0.1", port)], name
    assert _published(services["api"]) == [("0.0.0.0", 8000)]  # the service: it has keys


def test_grafana_s_admin_password_has_no_default() -> None:
    """Problem 7: Grafana came up as admin/admin."""
    compose = require_binary("docker-compose", "apt-get install docker-compose")
    without = subprocess.run(
        [compose, *BASE, "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in _env().items() if k != "GRAFANA_ADMIN_PASSWORD"},
    )
    assert without.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in without.stderr
    grafana = _compose_config(BASE, GRAFANA_ADMIN_PASSWORD="s3cret")["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert (
        "admin"
        not in (REPO_ROOT / ".env.example")
        .read_text()
        .split("GRAFANA_ADMIN_PASSWORD=")[1]
        .split("\n")[0]
    )


def test_prometheus_sends_the_metrics_token_to_the_api() -> None:
    """The API's /metrics takes OPTBENCH_METRICS_TOKEN; Prometheus's scrape of it carries the
    same token, through a credentials file its entrypoint writes from the environment."""
    services = _compose_config(BASE, OPTBENCH_METRICS_TOKEN="tok-123")
    assert services["api"]["environment"]["OPTBENCH_METRICS_TOKEN"] == "tok-123"
    prometheus = services["prometheus"]
    assert prometheus["environment"]["OPTBENCH_METRICS_TOKEN"] == "tok-123"
    config = yaml.safe_load((REPO_ROOT / PROMETHEUS_CONFIG).read_text())
    api_job = next(job for job in config["scrape_configs"] if job["job_name"] == "optbench-api")
    authorization = api_job["authorization"]
    assert authorization["type"] == "Bearer"
    token_file = "/etc/prometheus/" + authorization["credentials_file"]
    entrypoint = " ".join(prometheus["entrypoint"])
    assert f"> {token_file}" in entrypoint and "$OPTBENCH_METRICS_TOKEN" in entrypoint
    assert (
        "exec /bin/prometheus" in entrypoint
        and "--config.file=/etc/prometheus/prometheus.yml" in entrypoint
    )
    # without a token set, the API's /metrics stays public and the file is empty
    assert _compose_config(BASE)["api"]["environment"]["OPTBENCH_METRICS_TOKEN"] == ""


def test_workers_serve_metrics_to_prometheus_on_the_compose_network() -> None:
    """The worker's bind address is loopback on the embedded default; in compose Prometheus
    scrapes each replica over the network (no host port: `expose` only)."""
    worker = _compose_config(BASE)["worker"]
    assert worker["environment"]["OPTBENCH_WORKER_METRICS_ADDRESS"] == "0.0.0.0"
    assert "ports" not in worker


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
