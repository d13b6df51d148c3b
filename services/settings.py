"""Settings, read once from the environment (prefix ``OPTBENCH_``).

With nothing set, optbench runs on the *embedded default*: a SQLite file and Kombu's
``filesystem://`` broker, both under ``OPTBENCH_HOME``, so a fresh machine needs only pip.
A cluster sets ``OPTBENCH_DATABASE_URL`` (PostgreSQL, psycopg 3) and ``OPTBENCH_BROKER_URL``
(Redis or RabbitMQ).
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "optbench"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTBENCH_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Folder for the embedded SQLite database and the filesystem broker.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means sqlite:///<home>/optbench.db.",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker URL; filesystem:// keeps messages under <home>/broker.",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where `optbench submit/status/watch/summary` reach the API",
    )
    flush_every_steps: int = Field(
        default=100,
        ge=1,
        description="Step metrics are buffered and written once per this many steps "
        "(and at every epoch end).",
    )
    worker_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="Port of a worker process's Prometheus /metrics; 0 turns it off.",
    )
    worker_metrics_address: str = Field(
        default="",
        description="address a worker's /metrics binds (an IP literal, e.g. 0.0.0.0 or ::); "
        "empty: 127.0.0.1 on the embedded default (nothing else scrapes it), 0.0.0.0 otherwise "
        "(Prometheus on another host or container). It carries no owner's data",
    )
    worker_concurrency: int = Field(
        default=0,
        ge=0,
        description="processes of a worker's pool (`optbench worker --concurrency`); "
        "0 = one per CPU core",
    )
    job_parts: int | Literal["auto"] = Field(
        default="auto",
        description="parts a job's runs are split into, each a task that a worker process "
        "trains (workers/parts.py): auto = one per core and run on a CPU (fewer when the "
        "data set's copies would not fit in memory), one on CUDA; or a number",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where workers train: auto = CUDA when available, else CPU"
    )
    data_dir: Path | None = Field(
        default=None,
        description="folder of file data sets (mnist/, fashion_mnist/, cifar-10-batches-py/); "
        "empty means <home>/data",
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="largest data set upload accepted (413 above)"
    )
    max_upload_columns: int = Field(
        default=20_000,
        ge=2,
        description="columns of a CSV upload, checked on its header before any row is "
        "parsed (422 above)",
    )
    # --- authentication (services/auth.py, services/api/security.py) ------------------------
    auth: Literal["auto", "loopback", "required"] = Field(
        default="auto",
        description="loopback: a request from this machine (127.0.0.1 or ::1, to a loopback "
        "host name, not from another web origin, not forwarded by a proxy) without a key acts "
        "as owner 'local'; any other request needs a key. required: every /v1 request needs "
        "a key. auto (the default) is resolved when the settings load: loopback on the "
        "embedded default (a SQLite database), required with any other database (a service "
        "others reach); `settings.auth` is never 'auto' afterwards",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "Forwarded / X-Forwarded-For headers are believed (services/api/proxies.py); * = "
        "any peer; empty: none, the TCP peer is the client",
    )
    auth_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="failed authentications (bad key, bad /metrics token) allowed per client "
        "address per minute, as a burst; past that, requests carrying a key get a 429 with "
        "Retry-After and no database lookup (services/api/ratelimit.py)",
    )
    metrics_token: SecretStr = Field(
        default=SecretStr(""),
        description="bearer token GET /metrics requires (Prometheus's `authorization` "
        "block); empty: /metrics is public. Never logged",
    )
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="the key the CLI's client sends (Authorization: Bearer ...); never logged",
    )
    cors_origins: str = Field(
        default="",
        description="comma-separated web origins allowed to call the API from a browser "
        "(e.g. https://lab.example.org); empty: none",
    )
    allowed_hosts: str = Field(
        default="*",
        description="comma-separated Host header names the API answers (e.g. "
        "optbench.example.org,localhost); * = any",
    )
    # --- limits (services/limits.py, services/api/security.py) -----------------------------
    max_request_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest request body other than a data set upload (413 above)",
    )
    max_runs_per_job: int = Field(
        default=256, ge=1, description="optimizer entries x seeds of one job (422 above)"
    )
    max_steps_per_run: int = Field(
        default=10_000_000,
        ge=1,
        description="epochs x steps per epoch of one run, estimated at submission (422 above)",
    )
    max_model_parameters: int = Field(
        default=10_000_000,
        ge=2,
        description="parameters of the job's model, estimated at submission (422 above)",
    )
    max_jobs_in_flight: int = Field(
        default=8,
        ge=1,
        description="jobs queued or running per owner (429 with Retry-After above)",
    )
    # --- quotas and retention (services/quotas.py, services/retention.py) -----------------
    max_datasets_per_owner: int = Field(
        default=100,
        ge=1,
        description="data sets one owner may keep stored (an upload past it: 429; delete one "
        "with DELETE /v1/datasets/{id})",
    )
    max_dataset_bytes_per_owner: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="bytes of uploads (their size_bytes) one owner may keep stored (an upload "
        "past it: 413)",
    )
    job_retention_days: float = Field(
        default=0.0,
        ge=0,
        description="finished jobs (succeeded, failed, cancelled) are deleted with their runs "
        "and metrics this many days after they finished, by the API (on start, then hourly); "
        "0 = kept until deleted",
    )
    # --- compute and wall time (services/limits.py, services/compute.py, workers/timelimits.py)
    max_job_flops: float = Field(
        default=2e15,
        gt=0,
        description="compute estimate of one job: runs x steps x samples per step x training "
        "FLOPs per sample of its model, estimated at submission (422 above)",
    )
    max_job_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="wall time of one job from its start; past it the job fails with the "
        "reason (checked by the workers at each flush)",
    )
    max_part_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="wall time of one part of a job (one task on one worker process); past it "
        "the job fails with the reason. It also bounds how long another owner's job waits for "
        "a worker (services/fairness.py)",
    )
    # --- availability (services/reconcile.py, services/api/errors.py) ----------------------
    reconcile_interval_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how often the API sends queued jobs whose task the broker does not hold "
        "(services/reconcile.py); 0 = never (run `optbench reconcile` instead)",
    )
    reconcile_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="a queued job sent this long ago whose task the broker no longer holds "
        "is sent again",
    )
    heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how often a worker stamps the runs of the part it trains as alive "
        "(run.heartbeat_at, run.worker; workers/leases.py)",
    )
    heartbeat_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        description="a run of a running job whose heartbeat is older than this is taken for "
        "lost with its worker and sent to the queue again (services/reconcile.py); 0 = 6 x "
        "OPTBENCH_HEARTBEAT_SECONDS (60 s by default). Read by the reconciler (the API).",
    )
    checkpoint_every_steps: int = Field(
        default=1000,
        ge=0,
        description="a running run's whole training state is saved to the database at epoch "
        "ends and every this many steps (at the next flush), so a redelivered run resumes "
        "there (workers/checkpoints.py); 0 = never",
    )
    checkpoint_min_seconds: float = Field(
        default=30.0,
        ge=0,
        description="at most one checkpoint per run per this many seconds: a small model's "
        "epochs take milliseconds, and each checkpoint writes the model and optimizer state",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="a run is started at most this many times (a worker that died while "
        "training it counts); past that it fails, with its job, instead of killing workers in "
        "a loop",
    )
    retry_after_seconds: int = Field(
        default=5,
        ge=1,
        description="Retry-After of a 503 while the database cannot be reached",
    )
    write_retry_seconds: float = Field(
        default=600.0,
        ge=0,
        description="how long a worker keeps retrying a metric write that failed because "
        "the database could not be reached (backoff 0.5 s doubling to 10 s), holding the "
        "rows, before the job fails; 0 = fail at once (workers/sinks/sql.py)",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads of each part of a job; 0 = by the rule of "
        "workers/parts.py (with a fixed OPTBENCH_JOB_PARTS: CPU cores // parts)",
    )

    @field_validator("job_parts")
    @classmethod
    def _positive_parts(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("OPTBENCH_JOB_PARTS: 'auto' or a number of at least 1")
        return value

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_mode(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("auto", "loopback", "required"):
            return value.strip().lower()
        raise ValueError(
            f"OPTBENCH_AUTH: {value!r} is not a mode; use required (every /v1 request needs a "
            "key), loopback (requests from this machine need none) or auto (loopback on the "
            "embedded SQLite default, required otherwise)"
        )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        _networks(value)  # raises with the entry that is not an address
        return value

    @field_validator("worker_metrics_address")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"OPTBENCH_WORKER_METRICS_ADDRESS: '{value}' is not an IP address; use "
                    "e.g. 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)"
                ) from None
        return value

    @model_validator(mode="after")
    def _resolve_auth(self) -> Settings:
        # Keys by default wherever the service is shared: only the embedded default (one
        # user's SQLite file) lets this machine in without one, unless the operator says so.
        if self.auth == "auto":
            self.auth = "loopback" if self.is_embedded else "required"
        return self

    @model_validator(mode="after")
    def _timeout_above_heartbeats(self) -> Settings:
        timeout = self.heartbeat_timeout_seconds
        if timeout and timeout < 2 * self.heartbeat_seconds:
            raise ValueError(
                f"OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS ({timeout:g}) must be at least twice "
                f"OPTBENCH_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}), or 0 for 6 times it: "
                "one late heartbeat must not send a live run again"
            )
        return self

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds without a heartbeat after which a run counts as lost with its worker."""
        return self.heartbeat_timeout_seconds or 6 * self.heartbeat_seconds

    @property
    def forwarded_allow_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The proxies whose forwarded headers are believed; ``*`` is every address."""
        return _networks(self.forwarded_allow_ips)

    @property
    def worker_metrics_bind(self) -> str:
        """The address a worker's metrics server binds: the setting, else loopback on the
        embedded default and every interface elsewhere."""
        if self.worker_metrics_address:
            return self.worker_metrics_address
        return "127.0.0.1" if self.is_embedded else "0.0.0.0"

    @property
    def cors_origin_list(self) -> list[str]:
        return _items(self.cors_origins)

    @property
    def allowed_host_list(self) -> list[str]:
        return _items(self.allowed_hosts) or ["*"]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'optbench.db'}"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @property
    def is_embedded(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``OPTBENCH_FORWARDED_ALLOW_IPS`` parsed: ``*`` is both whole address families."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in _items(text):
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"OPTBENCH_FORWARDED_ALLOW_IPS: '{item}' is not an address or network; list "
                "your reverse proxies' addresses, e.g. 127.0.0.1,10.0.0.0/8 (or * for any)"
            ) from None
    return networks


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings. Tests that change the environment call ``cache_clear()``."""
    return Settings()
