"""End to end: optbench against plain PyTorch loops doing the same training, in one run.

    .venv/bin/python benchmarks/compare.py [--quick] [--workloads digits,mnist1d,mnist,lenet]
        [--database-url URL] [--redis-url URL] [--worker-args "--concurrency 1"]
        [--worker-env OPTBENCH_TORCH_THREADS=2] [--threads N] [--epochs N] [--json PATH]

For each workload it trains the lecture's eight optimizers (services/spec/job.py's
``LECTURE_SPEC``: gd, sgd, momentum, nag, adagrad, rmsprop, adadelta, adam) from one seeded
initial model on identical mini-batches, three ways:

(a) the lecture's loop (benchmarks/compare_baselines.py ``lecture_loop``): per optimizer a
    fresh copy of the model, a ``DataLoader`` over a ``TensorDataset``, ``loss.item()`` and the
    batch accuracy read every step, validation at each epoch end. What a student writes, and
    what optbench must not be much slower than to be worth using;
(b) the best plain in-memory loop (``tensor_loop``): tensors, ``torch.randperm`` index slices,
    per-step values kept as tensors and read at the end, validation per epoch. The ceiling for
    training the runs one after another in one process with torch's default threads;
(c) optbench end to end: ``optbench migrate``, ``optbench api`` and ``optbench worker`` as
    child processes (as tests/integration/conftest.py starts them) on a fresh PostgreSQL
    database and a Redis database, the same spec submitted over HTTP, timed from the submission
    until the job has succeeded, then checked: every run stored all its steps. (c) also stores
    every step's metrics, evaluates the test split and writes the summary; that is its job.

(a) and (b) train on the splits optbench makes (``workers.engine.datasets.load``), loaded
before their clocks start; (c) loads them in the worker, inside its time, from the caches a
running service has: a warm-up job (one optimizer, one epoch, the same data set) runs first,
timed and printed apart, so that (c) is not charged with generating MNIST-1D or reading the
files cold (which (a) and (b) did before their clocks started too). The numbers: training
samples per second (steps x batch size summed over the runs: the same count for all three),
the ratios c/a and c/b, and the achieved GFLOP/s (forward and backward of the Linear and
Conv2d layers, about 3 x 2 x multiply-adds per sample, over the wall time) next to the
machine's float32 matmul peak. (c)'s time is split by the job's timestamps (submitted to
started: queue and data loading; started to finished: training, evaluation, metric writes,
summary), next to what the worker's /metrics count in training steps and metric writes. The
final validation accuracies of (a), (b) and (c) are compared: the same arithmetic gives the
same accuracies up to rounding (which an unstable optimizer can grow). On a machine with
CUDA, (b) also runs on the GPU.

Threads: (a) and (b) use torch's default (``--threads`` sets another), the worker whatever
its options and environment give it (``--worker-args``, ``--worker-env``; by default the
worker's own defaults). On a small machine that other processes share, torch's OpenMP threads
spin while they wait for each other and a busy core makes every operation wait: timings then
grow many times over and vary from run to run. The benchmark warns when the load average is
high; ``OMP_WAIT_POLICY=PASSIVE`` in the environment or ``--threads 1`` takes the spinning out
of (a) and (b).

Workloads (epochs chosen so that (b) takes roughly 5-15 s on a 2-core CPU; ``--quick``: one
epoch on smaller data, a smoke check of the harness):

- digits: scikit-learn's 8x8 digits, MLP 64-128-10, batch 64;
- mnist1d: MNIST-1D generated locally, MLP 40-256-256-10, batch 128;
- mnist: synthetic MNIST-sized IDX files (28x28 uint8 images, 10 classes: a coarse
  class pattern under noise, ``--mnist-samples`` of them) written to a temporary
  OPTBENCH_DATA_DIR, MLP 784-256-10, batch 128;
- lenet: the same files, LeNet-5 (model ``cnn``), batch 128.

Needs PostgreSQL (``--database-url``, a server URL whose user may create databases; the
benchmark's database is dropped at the end) and Redis (``--redis-url``: a Redis database the
benchmark empties at the start). Processes, database and temporary files are cleaned up at the
end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/compare.py

from benchmarks import compare_baselines as plain
from benchmarks.support import ADMIN_URL, cpu_description, scratch_database, write_synthetic_mnist
from services.client import ApiClient, ApiError
from services.spec import LECTURE_SPEC, JobSpec
from services.support import free_port

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_WORKER_ARGS = ""  # the worker's own defaults (optbench worker --help)


class BenchmarkError(Exception):
    """The service did not do what the benchmark needs (it says what, with the logs)."""


@dataclass(frozen=True)
class Workload:
    name: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    batch_size: int
    epochs: int
    quick_dataset: dict[str, Any] = field(default_factory=dict)  # --quick: smaller data

    def spec(self, quick: bool, epochs: int | None = None) -> dict[str, Any]:
        dataset = {**self.dataset, **(self.quick_dataset if quick else {})}
        return {
            **LECTURE_SPEC,
            "name": f"compare: {self.name}",
            "dataset": dataset,
            "model": self.model,
            "epochs": epochs or (1 if quick else self.epochs),
            "batch_size": self.batch_size,
        }


WORKLOADS = {
    w.name: w
    for w in [
        Workload("digits", {"name": "digits", "val_fraction": 0.2}, LECTURE_SPEC["model"], 64, 200),
        Workload(
            "mnist1d",
            {"name": "mnist1d", "val_fraction": 0.2},
            {"name": "mlp", "hidden": [256, 256]},
            128,
            40,
            {"n_samples": 1000},
        ),
        Workload(
            "mnist",
            {"name": "mnist", "val_fraction": 0.2},
            {"name": "mlp", "hidden": [256]},
            128,
            20,
            {"max_samples": 1000},
        ),
        Workload(
            "lenet",
            {"name": "mnist", "val_fraction": 0.2},
            {"name": "cnn"},
            128,
            1,
            {"max_samples": 1000},
        ),
    ]
}


# --- the service's processes ----------------------------------------------------------------


def require_servers(database_url: str, redis_url: str) -> None:
    """Fail early, and say what to do, when PostgreSQL or Redis cannot be reached."""
    import redis
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import OperationalError

    url = make_url(database_url)
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else error
        raise SystemExit(
            f"PostgreSQL is not reachable at {url.host}:{url.port or 5432} ({reason}): "
            "start PostgreSQL or pass --database-url"
        ) from None
    finally:
        engine.dispose()
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        raise SystemExit(
            f"Redis is not reachable at {redis_url} ({error}): start Redis or pass --redis-url"
        ) from None


@contextmanager
def child(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``optbench <args>`` in its own process group (Ctrl-C reaches only this benchmark, which
    then stops it), output to ``log``; stopped when the block ends."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's process group (a prefork worker's pool too), SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Service:
    client: ApiClient
    metrics_port: int
    logs: list[Path]
    processes: dict[str, subprocess.Popen[bytes]]  # by command
    startup: dict[str, float]  # seconds: migrate, api, worker

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until ``predicate()`` held; fails with the logs when a process died or
        ``timeout`` passed."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise BenchmarkError(
                        f"optbench {name} exited with status {process.returncode} while "
                        f"waiting for {what}\n{self.log_tails()}"
                    )
            try:
                if predicate():
                    return time.perf_counter() - started
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.1)
        raise BenchmarkError(
            f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}"
        )

    def worker_metrics(self) -> dict[str, float]:
        """Sums of the worker's samples by name, over its training processes (each serves
        /metrics on the base port + its pool index)."""
        from prometheus_client.parser import text_string_to_metric_families

        totals: dict[str, float] = {}
        for index in range(2 * (os.cpu_count() or 1) + 2):
            try:
                url = f"http://127.0.0.1:{self.metrics_port + index}/metrics"
                families = list(text_string_to_metric_families(httpx.get(url).text))
            except (httpx.TransportError, ValueError):  # no process there, or not a worker's
                continue
            for family in families:
                for sample in family.samples:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals


def worker_ready(redis_url: str) -> Callable[[], bool]:
    """Whether a worker answers a Celery ping on the broker (it takes tasks then)."""
    from celery import Celery

    app = Celery(broker=redis_url)
    return lambda: bool(app.control.ping(timeout=0.5))


@contextmanager
def service(args: argparse.Namespace, data_dir: Path, scratch: Path) -> Iterator[Service]:
    """migrate, api and worker on a fresh database (dropped after) and an emptied Redis db."""
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()  # no tasks left over from an earlier run
    with scratch_database(args.database_url) as url, ExitStack() as stack:
        metrics_port = free_port()
        env = {
            **os.environ,
            "OPTBENCH_DATABASE_URL": url.render_as_string(hide_password=False),
            "OPTBENCH_BROKER_URL": args.redis_url,
            "OPTBENCH_AUTH": "loopback",  # its client sends no key (PostgreSQL's default: required)
            "OPTBENCH_HOME": str(scratch / "home"),
            "OPTBENCH_DATA_DIR": str(data_dir),
            "OPTBENCH_WORKER_METRICS_PORT": str(metrics_port),
        }
        worker_env = {**env, **dict(item.split("=", 1) for item in args.worker_env)}
        startup: dict[str, float] = {}
        print(f"  optbench migrate (database {url.database})", flush=True)
        started = time.perf_counter()
        migrate = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise BenchmarkError(f"optbench migrate failed:\n{migrate.stdout}{migrate.stderr}")
        startup["migrate"] = time.perf_counter() - started
        api_port = free_port()
        worker_args = shlex.split(args.worker_args)
        print(f"  optbench api --port {api_port}; optbench worker {args.worker_args}", flush=True)
        logs = [scratch / "api.log", scratch / "worker.log"]
        api_args = ["api", "--port", str(api_port), "--log-level", "warning"]
        processes = {
            "api": stack.enter_context(child(api_args, env, logs[0])),
            "worker": stack.enter_context(child(["worker", *worker_args], worker_env, logs[1])),
        }
        client = stack.enter_context(ApiClient(f"http://127.0.0.1:{api_port}"))
        running = Service(client, metrics_port, logs, processes, startup)
        startup["api"] = running.wait_for(client.ready, 60, "the API")
        startup["worker"] = startup["api"] + running.wait_for(
            worker_ready(args.redis_url), 120, "the worker"
        )
        print(
            f"  up: migrate {startup['migrate']:.1f} s, API {startup['api']:.1f} s, "
            f"worker {startup['worker']:.1f} s (from their start)",
            flush=True,
        )
        yield running


# --- (c): one job through the service --------------------------------------------------------


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_service(running: Service, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Submit, wait for success, check every step was stored; time and break down the job."""
    before = running.worker_metrics()
    started = time.perf_counter()
    job = running.client.submit(spec)
    last_print = [started]

    def progress(state: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - last_print[0] >= 10:
            done = state["progress"]
            print(
                f"    {state['status']}: {done['steps_done']:,} / {done['total_steps'] or '?'} "
                f"steps, {now - started:.0f} s",
                flush=True,
            )
            last_print[0] = now
        if now - started > timeout:
            raise BenchmarkError(f"job {state['id']} not done after {timeout:.0f} s")

    job = running.client.wait(job["id"], progress, interval=0.1)
    seconds = time.perf_counter() - started
    after = running.worker_metrics()
    if job["status"] != "succeeded":
        raise BenchmarkError(
            f"job {job['id']} {job['status']}: {job['error']}\n{running.log_tails()}"
        )
    incomplete = [
        f"{run['label']} {run['steps_done']}/{run['total_steps']}"
        for run in job["runs"]
        if run["total_steps"] is None or run["steps_done"] != run["total_steps"]
    ]
    if incomplete:
        raise BenchmarkError(
            f"job {job['id']} succeeded but not every step was stored: {incomplete}"
        )
    summary = running.client.summary(job["id"])

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    created, began, finished = (
        _timestamp(job[key]) for key in ("created_at", "started_at", "finished_at")
    )
    steps = delta("optbench_train_step_duration_seconds_sum")
    writes = delta("optbench_metric_write_duration_seconds_sum")
    return {
        "seconds": seconds,
        "steps": sum(run["total_steps"] for run in job["runs"]),
        "samples": int(delta("optbench_train_samples_total")),
        "final_val_accuracy": {
            row["label"]: row["final_val_accuracy"] for row in summary["optimizers"]
        },
        # Wall time, from the job's timestamps: together they make up "seconds".
        "breakdown": {
            "submitted to started (queue, data loading)": began - created,
            "started to finished (training, evaluation, writes)": finished - began,
            "finished to seen finished (polling)": seconds - (finished - created),
        },
        # Process time, from the worker's /metrics, summed over its processes: parallel
        # parts add up, and metric writes run in a writer thread beside training.
        "worker_seconds": {
            "training steps": steps,
            "metric writes": writes,
            "checkpoints": delta("optbench_checkpoint_seconds_total"),
        },
        "checkpoints": {
            "stored": int(delta("optbench_checkpoints_total")),
            "bytes": int(delta("optbench_checkpoint_bytes_total")),
        },
    }


# --- one workload, three ways -----------------------------------------------------------------


def rate(result: dict[str, Any]) -> float:
    return float(result["samples"] / result["seconds"])


def run_workload(
    workload: Workload, args: argparse.Namespace, data_dir: Path, running: Service
) -> dict[str, Any]:
    spec_dict = workload.spec(args.quick, args.epochs)
    spec = JobSpec.model_validate(spec_dict)
    print(f"\n[{workload.name}] loading data for (a) and (b)", flush=True)
    started = time.perf_counter()
    data = plain.load_data(spec, data_dir)
    load_seconds = time.perf_counter() - started
    flops = plain.train_flops_per_sample(plain.initial_model(spec, data), data.input_shape)
    print(
        f"[{workload.name}] {len(data.y_train):,} training samples {list(data.input_shape)}, "
        f"{spec.epochs} epochs, batch {spec.batch_size}, {len(spec.optimizers)} optimizers, "
        f"{flops / 1e6:.2f} MFLOP per training sample; data loaded in {load_seconds:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results: dict[str, Any] = {
        "load_seconds": load_seconds,
        "flops_per_sample": flops,
        "load_average_before": os.getloadavg()[0],
    }
    phases: list[tuple[str, str, Callable[[], Any]]] = [
        ("a", "(a) lecture loop", lambda: plain.lecture_loop(spec, data)),
        ("b", "(b) tensor loop", lambda: plain.tensor_loop(spec, data)),
    ]
    if args.cuda:
        phases.append(("b_cuda", "(b) on CUDA", lambda: plain.tensor_loop(spec, data, "cuda")))
    for key, label, function in phases:
        print(f"[{workload.name}] {label} ...", flush=True)
        results[key] = asdict(function())
        print(f"[{workload.name}] {label}: {results[key]['seconds']:.1f} s", flush=True)
    # A running service has met its data sets before (the mnist1d cache under
    # OPTBENCH_HOME/cache, the files in the page cache) as (a) and (b) have theirs in memory:
    # a one-epoch job of one optimizer on the same data comes first, timed apart, not in (c).
    warm_up = {**spec_dict, "epochs": 1, "optimizers": spec_dict["optimizers"][1:2]}
    print(f"[{workload.name}] (c) optbench: a warm-up job on the same data ...", flush=True)
    results["c_warm_up_seconds"] = run_service(running, warm_up, args.job_timeout)["seconds"]
    print(f"[{workload.name}] (c) optbench: submitting the job ...", flush=True)
    results["c"] = run_service(running, spec_dict, args.job_timeout)
    print(f"[{workload.name}] (c) optbench: {results['c']['seconds']:.1f} s", flush=True)

    expected = results["b"]["samples"]
    if results["a"]["samples"] != expected or results["c"]["samples"] not in (0, expected):
        print(
            f"  WARNING: samples differ: a {results['a']['samples']}, b {expected}, "
            f"c {results['c']['samples']} (from the worker's metrics)"
        )
    results["c"]["samples"] = expected  # the same training work; stored steps checked above
    for key in [k for k, _, _ in phases] + ["c"]:
        results[key]["samples_per_second"] = rate(results[key])
        results[key]["gflops"] = rate(results[key]) * flops / 1e9
    report_workload(workload.name, results)
    return results


def report_workload(name: str, results: dict[str, Any]) -> None:
    a, b, c = results["a"], results["b"], results["c"]
    print(
        f"[{name}] samples/s: a {rate(a):,.0f}, b {rate(b):,.0f}, c {rate(c):,.0f}; "
        f"c/a {rate(c) / rate(a):.2f}, c/b {rate(c) / rate(b):.2f}"
    )
    if "b_cuda" in results:
        cuda = rate(results["b_cuda"])
        print(f"[{name}] (b) on CUDA {cuda:,.0f} samples/s; c/b on CUDA {rate(c) / cuda:.2f}")
    print(f"[{name}] (c) {c['seconds']:.1f} s (from the job's timestamps):")
    for part, seconds in c["breakdown"].items():
        print(f"    {part:<52} {seconds:7.2f} s")
    print(f"    (loading the data took {results['load_seconds']:.2f} s in this process)")
    print(
        f"    (the warm-up job before it, one optimizer for one epoch on this data set with "
        f"cold caches, took {results['c_warm_up_seconds']:.2f} s, not counted)"
    )
    print("  seconds the worker's processes spent in them, added up over processes (/metrics):")
    for part, seconds in c["worker_seconds"].items():
        print(f"    {part:<52} {seconds:7.2f} s")
    stored = c["checkpoints"]
    print(f"    ({stored['stored']:,} run checkpoints stored, {stored['bytes'] / 2**20:,.1f} MiB)")

    def gap(x: dict[str, Any], y: dict[str, Any]) -> str:
        labels = [k for k in x["final_val_accuracy"] if y["final_val_accuracy"].get(k) is not None]
        differences = {k: x["final_val_accuracy"][k] - y["final_val_accuracy"][k] for k in labels}
        if not differences:
            return "n/a"
        worst = max(differences, key=lambda k: abs(differences[k]))
        return f"max |diff| {abs(differences[worst]):.4f} ({worst})"

    print(
        f"[{name}] final validation accuracy, same arithmetic up to rounding: "
        f"a vs b {gap(a, b)}, c vs b {gap(c, b)}",
        flush=True,
    )


def source_version() -> str:
    """``commit abc1234`` of the checkout, ``+ local changes`` when its tree differs."""

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "services", "workers")
    return f"commit {commit}" + (" + local changes in services/ or workers/" if changed else "")


# --- the table ------------------------------------------------------------------------------


def print_table(results: dict[str, dict[str, Any]], peak: float) -> None:
    keys = ["a", "b", "c"] + (["b_cuda"] if any("b_cuda" in r for r in results.values()) else [])
    width = {key: (max(7, len(key) + 2), len(key) + 10) for key in keys}  # seconds, samples/s
    header = f"{'workload':<9} {'samples':>9}"
    for key in keys:
        seconds, samples = width[key]
        header += f" | {key + ' s':>{seconds}} {key + ' samples/s':>{samples}} {'GFLOP/s':>7}"
    header += f" | {'c/a':>5} {'c/b':>5}" + (" c/b_cuda" if "b_cuda" in keys else "")
    print(f"\n{header}\n{'-' * len(header)}")
    for name, result in results.items():
        line = f"{name:<9} {result['b']['samples']:>9,}"
        for key in keys:
            part, (seconds, samples) = result[key], width[key]
            line += (
                f" | {part['seconds']:>{seconds}.1f} {rate(part):>{samples},.0f} "
                f"{part['gflops']:>7.2f}"
            )
        c = rate(result["c"])
        line += f" | {c / rate(result['a']):>5.2f} {c / rate(result['b']):>5.2f}"
        if "b_cuda" in keys:
            line += f" {c / rate(result['b_cuda']):>8.2f}"
        print(line)
    print(f"(matmul peak: {peak:.1f} GFLOP/s float32, torch's default threads)")


# --- main -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    began = time.perf_counter()
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    require_servers(args.database_url, args.redis_url)
    args.cuda = torch.cuda.is_available()
    default_threads = torch.get_num_threads()
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"machine: {cpu_description()}, torch {torch.__version__}, {default_threads} threads "
        f"(OMP_WAIT_POLICY {wait_policy})"
    )
    print(f"optbench: {source_version()}")
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus / 2:
        print(
            f"WARNING: load average {load:.1f} on {cpus} CPUs: other processes compete for the "
            "cores, and a torch process whose threads must meet at every operation slows down "
            "many times over. Timings will be slow and noisy: rerun on a quiet machine, and "
            "compare with --threads 1 --worker-env OPTBENCH_TORCH_THREADS=1"
        )
    peak = plain.matmul_gflops()
    print(f"float32 2048x2048 matmul: {peak:.1f} GFLOP/s ({default_threads} threads)", flush=True)
    output: dict[str, Any] = {
        "machine": cpu_description(),
        "torch": torch.__version__,
        "optbench": source_version(),
        "default_threads": default_threads,
        "omp_wait_policy": wait_policy,
        "threads": args.threads or default_threads,
        "matmul_gflops": peak,
        "quick": args.quick,
        "worker_args": args.worker_args,
        "worker_env": args.worker_env,
        "workloads": {},
    }
    if args.cuda:
        output["cuda_matmul_gflops"] = plain.matmul_gflops(device="cuda")
        print(f"CUDA float32 matmul: {output['cuda_matmul_gflops']:.1f} GFLOP/s")
    if args.threads and args.threads != default_threads:
        torch.set_num_threads(args.threads)
        output["threads_matmul_gflops"] = plain.matmul_gflops()
        print(
            f"(a) and (b) on {args.threads} thread(s) (--threads); matmul on them: "
            f"{output['threads_matmul_gflops']:.1f} GFLOP/s",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="optbench-compare-") as folder:
        scratch = Path(folder)
        data_dir = scratch / "data"
        if {"mnist", "lenet"} & set(names):
            samples = 2000 if args.quick else args.mnist_samples
            print(f"writing {samples:,} synthetic 28x28 images to {data_dir / 'mnist'}")
            write_synthetic_mnist(data_dir, samples)
        print("starting optbench", flush=True)
        with service(args, data_dir, scratch) as running:
            output["startup_seconds"] = running.startup
            for name in names:
                output["workloads"][name] = run_workload(WORKLOADS[name], args, data_dir, running)
            print(f"\nmachine at the end: load average {os.getloadavg()[0]:.1f}")
        print_table(output["workloads"], peak)
    output["total_seconds"] = time.perf_counter() - began
    if "threads_matmul_gflops" in output:
        print(
            f"(a) and (b) on {args.threads} thread(s): matmul peak on them "
            f"{output['threads_matmul_gflops']:.1f} GFLOP/s"
        )
    if "cuda_matmul_gflops" in output:
        print(f"CUDA matmul peak {output['cuda_matmul_gflops']:.1f} GFLOP/s")
    print(
        f"worker: optbench worker {args.worker_args or '(its defaults)'} "
        f"{' '.join(args.worker_env)}; "
        f"started in {output['startup_seconds']['worker']:.1f} s (not in (c)'s times)"
    )
    print(f"whole benchmark {output['total_seconds']:.0f} s")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="one epoch on small data: a smoke check"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--epochs", type=int, help="instead of each workload's own epochs")
    parser.add_argument(
        "--database-url",
        default=ADMIN_URL,
        help="PostgreSQL server (a user who may create databases); default: "
        "$OPTBENCH_TEST_POSTGRES or the local server as user postgres",
    )
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help="a Redis database the benchmark may empty"
    )
    parser.add_argument(
        "--worker-args",
        default=DEFAULT_WORKER_ARGS,
        help="options of `optbench worker`, e.g. '--concurrency 1 --pool solo' (default: none, "
        "the worker's own: see `optbench worker --help`)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the worker, e.g. OPTBENCH_TORCH_THREADS=2 (repeatable)",
    )
    parser.add_argument(
        "--mnist-samples", type=int, default=12_000, help="synthetic 28x28 images in all"
    )
    parser.add_argument(
        "--job-timeout", type=float, default=1800, help="seconds one job of (c) may take"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of (a) and (b); 0: torch's default (the worker's are "
        "OPTBENCH_TORCH_THREADS, see --worker-env)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    bad = [item for item in args.worker_env if "=" not in item]
    if bad:
        parser.error(f"--worker-env takes NAME=VALUE, got {bad}")
    # A plain kill (SIGTERM) cleans up like Ctrl-C: stops the processes, drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        output = run(args)
    except KeyboardInterrupt:
        raise SystemExit("\ninterrupted (processes stopped, database dropped)") from None
    except (BenchmarkError, ApiError) as error:
        raise SystemExit(f"benchmark failed: {error}") from None
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
