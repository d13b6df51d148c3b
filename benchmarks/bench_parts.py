"""Parts x threads: one job trained as P parts in P worker processes with T torch threads
each, through the workers' own code (workers/execution.py), on this machine.

    .venv/bin/python -m benchmarks.bench_parts [--workloads digits,mnist1d,mnist784,wide]
        [--configs 1x1,1x2,2x1,auto] [--repeats 3] [--fuse on|off] [--omp-wait PASSIVE]

A small stand-in for a prefork Celery worker: two processes forked after the worker code is
imported (as Celery's pool is), each taking tasks from one shared queue (the broker). A job's
first task plans it (``execute_job``: load, split, mark running, send parts 2..P into the
queue, train part 1); the other process takes part 2 (``execute_part``). ``PxT`` sets
``OPTBENCH_JOB_PARTS=P`` and ``OPTBENCH_TORCH_THREADS=T`` for that job; ``auto`` leaves both
to the rule (workers/parts.py). Every job is a fresh job in a scratch PostgreSQL database
(dropped at the end), its metrics stored by the SQL sink as in a worker. The time is the
wall time from sending the job until the part that ends last has finalised it: what a user
waits for.

The machine may be shared: before each job the script waits (``--patience`` s at most) until
other processes use less than ``--quiet`` of the CPUs, and it reports how much of the CPUs
other processes took during each job (/proc/stat minus the benchmark's own processes).
Configurations are interleaved, repeat by repeat; the first round only warms up. The table
shows the fastest and the median repeat and the most other processes took.

Workloads (8 optimizers of the lecture comparison, seed 0, batch 64 unless said):

- digits: scikit-learn digits, MLP 64-128-10, 10 epochs (the lecture job)
- mnist1d: MNIST-1D (5,000 samples), MLP 40-256-256-10, 10 epochs
- mnist784: a synthetic MNIST-sized problem (10,000 x 784, 10 classes), MLP 784-256-10,
  3 epochs
- wide: the same data, MLP 784-1024-1024-10, batch 256, 2 epochs
- huge: the same data, MLP 784-4096-4096-10, batch 512, 1 epoch (not run by default)

``--fuse off`` trains every run alone (as models that cannot fuse do); ``--omp-wait ACTIVE``
measures OpenMP's spinning wait instead of the workers' PASSIVE.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import statistics
import sys
import time
from typing import Any

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits": {
        "dataset": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [128]},
        "epochs": 10,
        "batch_size": 64,
    },
    "mnist1d": {
        "dataset": {"name": "mnist1d", "n_samples": 5000},
        "model": {"name": "mlp", "hidden": [256, 256]},
        "epochs": 10,
        "batch_size": 64,
    },
    "mnist784": {
        "dataset": {
            "name": "classification",
            "n_samples": 10_000,
            "n_features": 784,
            "n_informative": 50,
            "n_classes": 10,
        },
        "model": {"name": "mlp", "hidden": [256]},
        "epochs": 3,
        "batch_size": 64,
    },
    "wide": {
        "dataset": {
            "name": "classification",
            "n_samples": 10_000,
            "n_features": 784,
            "n_informative": 50,
            "n_classes": 10,
        },
        "model": {"name": "mlp", "hidden": [1024, 1024]},
        "epochs": 2,
        "batch_size": 256,
    },
    "huge": {
        "dataset": {
            "name": "classification",
            "n_samples": 10_000,
            "n_features": 784,
            "n_informative": 50,
            "n_classes": 10,
        },
        "model": {"name": "mlp", "hidden": [4096, 4096]},
        "epochs": 1,
        "batch_size": 512,
    },
}

PROCESSES = 2


FUSE = {"on": True, "off": False}


def spec(name: str, fuse: str = "on") -> dict[str, Any]:
    from services.spec import LECTURE_SPEC

    return {
        **WORKLOADS[name],
        "name": f"bench_parts {name}",
        "optimizers": LECTURE_SPEC["optimizers"],
        "seeds": [0],
        "execution": {"fuse": FUSE[fuse]},
    }


def worker(tasks: Any, results: Any) -> None:
    """One pool process: take a task, run it through the workers' code, report."""
    import torch

    from services.db.session import reset_engine
    from services.queue import QUEUE  # noqa: F401  (the same imports a worker has)
    from services.settings import get_settings
    from workers.execution import execute_job, execute_part

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if " parts x " in message or " part x " in message:
                results.put((message.split()[1].rstrip(":"), "log", message, 0.0))

    logger = logging.getLogger("workers.execution")
    logger.addHandler(Forward())
    logger.setLevel(logging.INFO)
    reset_engine()
    torch.set_num_threads(1)
    while True:
        task = tasks.get()
        if task is None:
            return
        kind, job_id, parts, threads, extra = task
        os.environ["OPTBENCH_JOB_PARTS"] = str(parts)
        os.environ["OPTBENCH_TORCH_THREADS"] = str(threads)
        get_settings.cache_clear()
        if kind == "plan":

            def send(
                job: str, run_ids: list[int], t: int, part: int, n: int, p: int = parts
            ) -> None:
                tasks.put(("part", job, p, t, (run_ids, part, n)))

            status = execute_job(job_id, send_part=send)
        else:
            run_ids, part, n = extra
            status = execute_part(job_id, run_ids, threads, part=part, parts=n)
        results.put((job_id, kind, status, time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="digits,mnist1d,mnist784,wide")
    parser.add_argument("--configs", default="1x1,1x2,2x1", help="PxT, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--omp-wait", default="PASSIVE", choices=["PASSIVE", "ACTIVE"])
    parser.add_argument(
        "--fuse", default="on", choices=sorted(FUSE), help="off: every run trains alone"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per job")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.05,
        help="before each job, wait until other processes use less than this share of the "
        "CPUs (over one second)",
    )
    parser.add_argument("--patience", type=float, default=300, help="... for at most this long")
    args = parser.parse_args()
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait  # before torch loads, as the worker does
    os.environ.setdefault("OPTBENCH_FLUSH_EVERY_STEPS", "100")

    import multiprocessing

    from benchmarks.support import ADMIN_URL, cpu_description, scratch_database
    from services.db import store
    from services.db.migrate import upgrade
    from services.db.session import reset_engine, unit_of_work
    from services.spec import JobSpec
    from workers import execution  # noqa: F401  (imported before the fork, as Celery does)

    configs = [_config(c) for c in args.configs.split(",")]
    names = args.workloads.split(",")
    print(cpu_description(), f"OMP_WAIT_POLICY={args.omp_wait}, fuse {args.fuse}", flush=True)
    with scratch_database(ADMIN_URL):
        upgrade()
        reset_engine()  # no connection crosses the fork
        context = multiprocessing.get_context("fork")
        tasks, results = context.Queue(), context.Queue()
        pool = [context.Process(target=worker, args=(tasks, results)) for _ in range(PROCESSES)]
        for process in pool:
            process.start()
        pids = [os.getpid()] + [p.pid for p in pool if p.pid is not None]
        times: dict[tuple[str, tuple[str, int]], list[tuple[float, float]]] = {}
        try:
            for name in names:
                flops = _step_gflop(name, args.fuse)
                print(f"{name}: {flops:.4f} GFLOP per step of one run", flush=True)
                for repeat in range(args.repeats + 1):  # the first round warms up
                    for parts, threads in configs:
                        others = _wait_until_quiet(pids, args.quiet, args.patience)
                        with unit_of_work() as session:
                            job = JobSpec(**spec(name, args.fuse))
                            job_id = str(store.create_job(session, job).id)
                        busy, total = _cpu()
                        own = _own(pids)
                        started = time.perf_counter()
                        tasks.put(("plan", job_id, parts, threads, None))
                        seconds, plan = _wait(results, job_id, started, args.timeout)
                        busy2, total2 = _cpu()
                        others = max(busy2 - busy - (_own(pids) - own), 0) / max(total2 - total, 1)
                        if repeat:
                            times.setdefault((name, (parts, threads)), []).append((seconds, others))
                        print(
                            f"  {name} {parts}x{threads} repeat {repeat}: {seconds:.2f} s, "
                            f"other processes {others:.0%} of the CPUs; {plan}",
                            flush=True,
                        )
        finally:
            for _ in pool:
                tasks.put(None)
            for process in pool:
                process.join(timeout=30)
    _table(names, configs, times)


def _config(text: str) -> tuple[str, int]:
    """``PxT`` (``OPTBENCH_JOB_PARTS=P``, ``OPTBENCH_TORCH_THREADS=T``), or ``auto``."""
    if text == "auto":
        return ("auto", 0)
    parts, threads = text.split("x")
    return (str(int(parts)), int(threads))


def _cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own(pids: list[int]) -> int:
    """CPU jiffies (user + system) used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def _wait_until_quiet(pids: list[int], limit: float, patience: float) -> float:
    """Wait (at most ``patience`` s) until, over one second, other processes used less than
    ``limit`` of the machine's CPUs; returns their share in the last second."""
    deadline = time.monotonic() + patience
    while True:
        busy, total, own = *_cpu(), _own(pids)
        time.sleep(1.0)
        busy2, total2, own2 = *_cpu(), _own(pids)
        share = max(busy2 - busy - (own2 - own), 0) / max(total2 - total, 1)
        if share < limit or time.monotonic() > deadline:
            return share


def _wait(results: Any, job_id: str, started: float, timeout: float) -> tuple[float, str]:
    """Seconds from ``started`` until a part of the job reports it finished (the part that
    ends last finalises it), and the plan the first task logged."""
    deadline, plan = time.monotonic() + timeout, ""
    while True:
        try:
            job, kind, status, end = results.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            sys.exit(f"job {job_id} did not finish in {timeout} s")
        if job != job_id:
            continue
        if kind == "log":
            plan = plan or status.split(": ", 1)[-1]
        elif status in ("succeeded", "failed"):
            assert status == "succeeded", (job_id, status)
            return end - started, plan


def _step_gflop(name: str, fuse: str) -> float:
    """The rule's input (workers/parts.step_flops), in a child so this process never runs
    torch before the fork-free path ends (OpenMP is not fork-safe once used)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return float(pool.apply(_count_flops, (name, fuse)))


def _count_flops(name: str, fuse: str) -> float:
    from services.settings import get_settings
    from services.spec import JobSpec
    from workers.adapter import dataset_config
    from workers.engine import Experiment, JobConfig, ModelConfig
    from workers.parts import step_flops

    job = JobSpec(**spec(name, fuse))
    config = JobConfig(
        dataset=dataset_config(None, job, get_settings()),  # type: ignore[arg-type]
        model=ModelConfig(job.model.name, job.model.model_dump(exclude={"name"})),
        runs=(),
        epochs=job.epochs,
        batch_size=job.batch_size,
    )
    return step_flops(Experiment(config)) / 1e9


def _table(
    names: list[str],
    configs: list[tuple[str, int]],
    times: dict[tuple[str, tuple[str, int]], list[tuple[float, float]]],
) -> None:
    """Fastest and median repeat per workload and configuration, and the most CPU other
    processes took during any repeat of it."""

    def label(parts: str, threads: int) -> str:
        return "auto" if parts == "auto" else f"P={parts} x {threads} thread{'s' * (threads > 1)}"

    print()
    print("| workload | " + " | ".join(label(*config) for config in configs) + " |")
    print("|---" * (len(configs) + 1) + "|")
    for name in names:
        cells = []
        for config in configs:
            runs = times.get((name, config), [])
            if not runs:
                cells.append("-")
                continue
            fastest = min(seconds for seconds, _ in runs)
            median = statistics.median(seconds for seconds, _ in runs)
            others = max(share for _, share in runs)
            cells.append(f"{fastest:.2f} s (median {median:.2f}; others <= {others:.0%})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
