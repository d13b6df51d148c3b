"""Where a small job's time goes: the lecture job end to end, split into its moments.

    .venv/bin/python benchmarks/bench_small_job.py [--epochs 3,20,200] [--repeats 5]
        [--database-url URL] [--redis-url URL] [--worker-args ...] [--worker-env N=V]
        [--json PATH]

It starts the service as benchmarks/compare.py does (``optbench migrate``, ``optbench api``
and one ``optbench worker`` at its defaults, on a fresh PostgreSQL database and a Redis
database), runs a warm-up job (one optimizer, one epoch: a running service has met its data
before), then submits the lecture job (``LECTURE_SPEC``: eight optimizers on digits) at each
number of epochs ``--repeats`` times and waits for it as the CLI does (``ApiClient.wait``,
a long-poll). Each job is split by its own timestamps (``created_at``, ``finished_at``) and
the workers' (the ``timings`` block of ``GET /v1/jobs/{id}``, workers/timings.py) plus the
client's own clock at both ends:

    submit      the POST until the job was stored (created_at)
    queued      created until a worker process picked the task up
    loading     picked up until the data were ready (the job planned into parts)
    starting    data ready until the first step (job started, parts sent, runs claimed)
    training    first step until the last (the evaluations between epochs included)
    storing     last step until its rows were committed (test split, last flush)
    finishing   rows committed until the job was succeeded (summary, status)
    seen        succeeded until the client had it

and ``steps``, the seconds in training steps alone (of the part that spent most), with
``outside`` = the whole time minus ``steps``: what the job costs beyond training. Medians
over the repetitions. In the same run, per number of epochs, the plain loops of compare.py
train the same eight optimizers on the same splits: (a) the lecture's DataLoader loop and
(b) the in-memory tensor loop (median of ``--loop-repeats``), and the ratios c/a and c/b
are of their wall times (the same training samples in all three).

One machine for everything: client, API, worker, PostgreSQL and Redis share its cores, so
on a loaded machine the absolute times move; ratios taken in the same run move less.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks import compare
from benchmarks import compare_baselines as plain
from benchmarks.support import ADMIN_URL, cpu_description
from services.client import ApiError
from services.spec import LECTURE_SPEC, JobSpec

SPANS = ("submit", "queued", "loading", "starting", "training", "storing", "finishing", "seen")
MOMENTS = ("picked_up_at", "data_ready_at", "first_step_at", "last_step_at", "rows_committed_at")


def lecture_spec(epochs: int) -> dict[str, Any]:
    return {**LECTURE_SPEC, "name": f"small job: lecture, {epochs} epochs", "epochs": epochs}


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def breakdown(job: dict[str, Any], sent: float, seen: float) -> dict[str, float]:
    """The spans of one job (seconds) from its timestamps and the client's ``sent`` and
    ``seen`` (``time.time()``), with ``total``, ``steps`` and ``outside``."""
    timings = job.get("timings") or {}
    missing = [key for key in MOMENTS if not timings.get(key)]
    if missing:
        raise compare.BenchmarkError(f"job {job['id']} has no {missing} in its timings")
    moments = [
        sent,
        _at(job["created_at"]),
        *(_at(timings[key]) for key in MOMENTS),
        _at(job["finished_at"]),
        seen,
    ]
    spans = {
        name: end - start for name, start, end in zip(SPANS, moments, moments[1:], strict=False)
    }
    total = seen - sent
    steps = float(timings["step_seconds"])
    return {**spans, "total": total, "steps": steps, "outside": total - steps}


def run_job(
    running: compare.Service, spec: dict[str, Any], timeout: float, poll: float = 0
) -> dict[str, float]:
    """One job: submitted, waited for (a long-poll; ``poll`` > 0: plain polling at that
    interval instead, as clients did before), checked, broken down."""
    sent = time.time()
    job = running.client.submit(spec)

    def check(state: dict[str, Any]) -> None:
        if time.time() - sent > timeout:
            raise compare.BenchmarkError(f"job {state['id']} not done after {timeout:.0f} s")

    if poll > 0:
        job = running.client.wait(job["id"], check, interval=poll, long_poll=0)
    else:
        job = running.client.wait(job["id"], check)
    seen = time.time()
    if job["status"] != "succeeded":
        raise compare.BenchmarkError(
            f"job {job['id']} {job['status']}: {job['error']}\n{running.log_tails()}"
        )
    short = [r["label"] for r in job["runs"] if r["steps_done"] != r["total_steps"]]
    if short:
        raise compare.BenchmarkError(f"job {job['id']}: runs {short} did not store every step")
    return breakdown(job, sent, seen)


def loops(epochs: int, repeats: int) -> dict[str, Any]:
    """(a) and (b) of compare.py on the lecture spec at ``epochs``: median seconds each."""
    spec = JobSpec.model_validate(lecture_spec(epochs))
    data = plain.load_data(spec, None)
    result: dict[str, Any] = {}
    for key, function in (("a", plain.lecture_loop), ("b", plain.tensor_loop)):
        function(JobSpec.model_validate(lecture_spec(1)), data)  # first-use costs: not timed
        done = [function(spec, data) for _ in range(repeats)]
        result[key] = statistics.median(r.seconds for r in done)
        result[f"{key}_samples"] = done[0].samples
    return result


def median_spans(jobs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(job[key] for job in jobs) for key in jobs[0]}


def print_table(results: dict[int, dict[str, Any]]) -> None:
    columns = [*SPANS, "total", "steps", "outside"]
    header = f"{'epochs':>6} " + " ".join(f"{name:>9}" for name in columns)
    header += f" | {'(a) s':>7} {'(b) s':>7} | {'c/a':>5} {'c/b':>5}"
    print(f"\nmedians, ms (the loops: seconds; c/a and c/b: wall-time ratios)\n{header}")
    print("-" * len(header))
    for epochs, result in results.items():
        spans = result["median"]
        line = f"{epochs:>6} " + " ".join(f"{spans[name] * 1000:>9.1f}" for name in columns)
        a, b, c = result["loops"]["a"], result["loops"]["b"], spans["total"]
        line += f" | {a:>7.3f} {b:>7.3f} | {a / c:>5.2f} {b / c:>5.2f}"
        print(line)
    print(
        "(c/a, c/b: how many times faster than (a) and (b) the service ran the same training,"
        " submission to success seen)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    epochs_list = [int(e) for e in args.epochs.split(",") if e.strip()]
    compare.require_servers(args.database_url, args.redis_url)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {cpu_description()}, torch {torch.__version__}; (a) and (b) on "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"optbench: {compare.source_version()}", flush=True)
    output: dict[str, Any] = {
        "machine": cpu_description(),
        "threads": torch.get_num_threads(),
        "epochs": {},
    }
    with tempfile.TemporaryDirectory(prefix="optbench-small-job-") as folder:
        scratch = Path(folder)
        args.quick = False
        with compare.service(args, scratch / "data", scratch) as running:
            output["startup_seconds"] = running.startup
            warm_up = {**lecture_spec(1), "optimizers": LECTURE_SPEC["optimizers"][1:2]}
            print(f"warm-up job: {run_job(running, warm_up, args.job_timeout)['total']:.2f} s")
            for epochs in epochs_list:
                repeats = args.repeats if epochs < 100 else max(1, args.repeats // 2 + 1)
                jobs = []
                for index in range(repeats):
                    jobs.append(run_job(running, lecture_spec(epochs), args.job_timeout, args.poll))
                    print(
                        f"[{epochs} epochs] job {index + 1}/{repeats}: "
                        f"{jobs[-1]['total']:.3f} s, outside steps {jobs[-1]['outside']:.3f} s",
                        flush=True,
                    )
                print(f"[{epochs} epochs] the plain loops (a) and (b) ...", flush=True)
                output["epochs"][epochs] = {
                    "jobs": jobs,
                    "median": median_spans(jobs),
                    "loops": loops(epochs, args.loop_repeats),
                    "load_average": os.getloadavg()[0],
                }
    print_table(output["epochs"])
    print(f"machine at the end: {cpu_description()}")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", default="3,20,200", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="jobs per number of epochs")
    parser.add_argument("--loop-repeats", type=int, default=3, help="runs of (a) and (b)")
    parser.add_argument("--database-url", default=ADMIN_URL, help="as benchmarks/compare.py")
    parser.add_argument("--redis-url", default=compare.REDIS_URL, help="a Redis db to empty")
    parser.add_argument("--worker-args", default=compare.DEFAULT_WORKER_ARGS)
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--job-timeout", type=float, default=600)
    parser.add_argument(
        "--poll",
        type=float,
        default=0,
        help="wait by plain polling at this interval (seconds) instead of the long-poll",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of (a) and (b); 0: torch's default (the worker trains a small "
        "job's part on one thread, workers/parts.py; on a loaded machine torch's default "
        "threads wait on each other many times over, see benchmarks/compare.py)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        output = run(args)
    except KeyboardInterrupt:
        raise SystemExit("\ninterrupted (processes stopped, database dropped)") from None
    except (compare.BenchmarkError, ApiError) as error:
        raise SystemExit(f"benchmark failed: {error}") from None
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
