"""A tuning sweep through optbench against the same trainings as plain loops, in one run.

    .venv/bin/python -m benchmarks.bench_sweep [--quick] [--workloads digits,mnist1d]
        [--epochs 20] [--small-epochs 3] [--points 36] [--threads N] [--json PATH]

The sweep is DeepOBS's protocol: each of the lecture's eight optimizers (services/spec/
job.py's ``LECTURE_SPEC``) at every learning rate of a 36-point log grid from 1e-5 to 1e2,
288 trials, on

- digits: scikit-learn's 8x8 digits, MLP 64-128-10, batch 64, 20 epochs;
- mnist1d: MNIST-1D generated locally by ``mnist1d`` (never its download path), MLP
  40-256-256-10, batch 128, 20 epochs.

Each workload is measured these ways, each in a fresh process (its own peak memory):

- **plain**: the best plain in-memory loop a user would write, one trial after another:
  the data as tensors, batches as ``torch.randperm`` index slices in the engine's order, a
  fresh copy of the seeded initial model and a ``torch.optim`` optimizer per trial, each
  step's loss and accuracy kept as tensors and read once per trial, validation at every
  epoch end, nothing stored. It picks each optimizer's learning rate as optbench does: the
  best validation accuracy at its best epoch, the first of equals.
- **optbench**: the same grid as a study spec (``"tuning": {"sampler": "grid", "trials": 36,
  "rerun_seeds": 1, "baseline": false}``, each entry's ``"search": {"lr": {"grid": [...]}}``)
  submitted through ``store.create_job`` and run by ``workers.execution.execute_job`` on a
  temporary embedded home (SQLite), as ``optbench run`` does: fused groups, every step of
  every trial stored (checked: the stored step rows equal the steps trained), each trial's
  selection score, then the best learning rate of each optimizer rerun on one fresh seed
  (8 more trainings, with the test split), the summary. Timed from submission to
  ``succeeded``: the whole study, although the plain loop does only the 288 trials (the
  ratio is conservative by the reruns' share, printed).
- **pruned**: the same study with successive halving (``min_epochs`` 2, ``reduction_factor``
  3: rungs at epochs 2, 6, 18): the steps it saved, and whether each optimizer's chosen
  learning rate stayed the one the full sweep chose.
- **small**: plain and optbench again at the lecture's few epochs (``--small-epochs``, 3),
  where the fixed costs (planning, the fusion probe, the data's copy, the database) show.

Both sides load the data and warm up (one short training of every optimizer class: torch's
lazy imports, such as ``torch._dynamo`` at an optimizer's first step, and the allocator's
pools) before their clocks start; optbench's warm-up is a one-epoch job of the same data set
through the same service path, which also fills its data cache (MNIST-1D is generated once).

Printed: samples/s (training samples: steps x batch, over the 288 trials), the ratio
optbench/plain, peak memory (``ru_maxrss``: the process's peak resident set, so Python,
torch's CPU allocator, the data and the stored rows' buffers together; and what the timed
part added to it), achieved GFLOP/s (forward and backward of the Linear layers, about
3 x 2 x multiply-adds per sample, over the wall time) against a float32 2048x2048 matmul
timed in the same run with the same threads. Both sides use the same torch threads
(``--threads``, default torch's own: all cores).

``--quick``: 4 grid points (unless ``--points``), 3 epochs (small job 1), MNIST-1D with 1,000
samples: a smoke run of the harness (tests/unit/test_benchmarks.py runs it).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/bench_sweep.py

from benchmarks.support import cpu_description
from services.spec import LECTURE_SPEC

PRUNING = {"rule": "successive_halving", "min_epochs": 2, "reduction_factor": 3}


@dataclass(frozen=True)
class Workload:
    name: str
    dataset: dict[str, Any]
    hidden: list[int]
    batch_size: int
    quick_dataset: dict[str, Any]


WORKLOADS = {
    "digits": Workload("digits", {"name": "digits", "val_fraction": 0.2}, [128], 64, {}),
    "mnist1d": Workload(
        "mnist1d", {"name": "mnist1d", "val_fraction": 0.2}, [256, 256], 128, {"n_samples": 1000}
    ),
}


def lr_grid(points: int) -> list[float]:
    """DeepOBS's grid: ``points`` learning rates, evenly spaced in log10 from 1e-5 to 1e2."""
    if points == 1:
        return [1e-5]
    return [float(f"{10 ** (-5 + 7 * i / (points - 1)):.6g}") for i in range(points)]


def study_spec(
    workload: Workload, epochs: int, grid: list[float], quick: bool, pruning: bool
) -> dict[str, Any]:
    """The sweep as an optbench study: every lecture optimizer searched over ``grid``."""
    tuning: dict[str, Any] = {
        "sampler": "grid",
        "trials": len(grid),
        "rerun_seeds": 1,
        "baseline": False,
    }
    if pruning:
        tuning["pruning"] = PRUNING
    return {
        **LECTURE_SPEC,
        "name": f"sweep: {workload.name}, {len(grid)} learning rates",
        "dataset": {**workload.dataset, **(workload.quick_dataset if quick else {})},
        "model": {"name": "mlp", "hidden": workload.hidden},
        "optimizers": [
            {**entry, "search": {"lr": {"grid": grid}}} for entry in LECTURE_SPEC["optimizers"]
        ],
        "epochs": epochs,
        "batch_size": workload.batch_size,
        "tuning": tuning,
    }


def _rss_mib() -> float:
    """The process's resident set now, in MiB (/proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the plain loop -------------------------------------------------------------------------


def plain_sweep(spec_data: dict[str, Any], threads: int) -> dict[str, Any]:
    """The 288 trials one after another as a plain loop (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from benchmarks import compare_baselines as plain
    from services.spec import JobSpec

    torch.set_num_threads(threads)
    spec = JobSpec.model_validate(spec_data)
    data = plain.load_data(spec, None)
    initial = plain.initial_model(spec, data)
    grid = spec_data["optimizers"][0]["search"]["lr"]["grid"]
    n_train = len(data.y_train)

    def trial(entry: Any, lr: float, epochs: int) -> tuple[float, int, int]:
        """(best validation accuracy over the epochs, steps, samples) of one training."""
        model = copy.deepcopy(initial)
        optimizer = plain.make_optimizer(entry.model_copy(update={"lr": lr}), model)
        generator = torch.Generator().manual_seed(spec.seeds[0])
        steps: list[torch.Tensor] = []
        validation: list[torch.Tensor] = []
        samples = 0
        for _ in range(epochs):
            model.train()
            parts = (
                [None]
                if entry.info.full_batch
                else plain.batches(n_train, spec.batch_size, generator)
            )
            for index in parts:
                x = data.x_train if index is None else data.x_train[index]
                y = data.y_train if index is None else data.y_train[index]
                optimizer.zero_grad(set_to_none=True)
                output = model(x)
                loss = F.cross_entropy(output, y)
                loss.backward()
                optimizer.step()
                steps.append(torch.stack([loss.detach(), (output.argmax(dim=1) == y).sum()]))
                samples += len(y)
            model.eval()
            with torch.no_grad():
                output = model(data.x_val)
                accuracy = (output.argmax(dim=1) == data.y_val).float().mean()
                validation.append(torch.stack([F.cross_entropy(output, data.y_val), accuracy]))
        torch.stack(steps).tolist()  # what a real loop keeps or plots
        accuracies = [a for _, a in torch.stack(validation).tolist() if math.isfinite(a)]
        return (max(accuracies) if accuracies else -math.inf), len(steps), samples

    for entry in spec.optimizers:  # warm-up: each class's first step, the allocator's pools
        trial(entry, 1e-3, 1)
    before = _rss_mib()
    started = time.perf_counter()
    chosen: dict[str, float] = {}
    total_steps = total_samples = 0
    for entry in spec.optimizers:
        best_score, best_lr = -math.inf, grid[0]
        for lr in grid:
            score, steps, samples = trial(entry, lr, spec.epochs)
            total_steps += steps
            total_samples += samples
            if score > best_score:  # the first of equals, as optbench's ``best``
                best_score, best_lr = score, lr
        chosen[entry.display_label] = best_lr
    seconds = time.perf_counter() - started
    flops = plain.train_flops_per_sample(initial, data.input_shape)
    return {
        "seconds": seconds,
        "epochs": spec.epochs,
        "steps": total_steps,
        "samples": total_samples,
        "flops_per_sample": flops,
        "chosen_lr": chosen,
        "peak_mib": _peak_mib(),
        "added_mib": _peak_mib() - before,
    }


# --- optbench -------------------------------------------------------------------------------


def optbench_sweep(spec_data: dict[str, Any], threads: int) -> dict[str, Any]:
    """The study through the service on a temporary embedded home (see the module docstring)."""
    home = tempfile.mkdtemp(prefix="optbench-sweep-")
    os.environ["OPTBENCH_HOME"] = home
    os.environ["OPTBENCH_TORCH_THREADS"] = str(threads)
    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
        os.environ.pop(name, None)  # the embedded default: SQLite and a filesystem queue
    from sqlalchemy import func, select

    from services.db import store
    from services.db.migrate import upgrade
    from services.db.models import RERUN, TRIAL, Job, Run, StepMetric
    from services.db.session import unit_of_work
    from services.spec import JobSpec
    from workers.execution import execute_job

    setup_started = time.perf_counter()
    upgrade()
    warm_up = {
        **spec_data,
        "name": "warm-up",
        "epochs": 1,
        "tuning": {**spec_data["tuning"], "trials": 1, "pruning": None},
        "optimizers": [{**e, "search": {"lr": {"grid": [1e-3]}}} for e in spec_data["optimizers"]],
    }
    for data in (warm_up, spec_data):  # the warm-up: the service's caches, torch's imports
        before = _rss_mib()
        with unit_of_work() as session:
            job_id = store.create_job(session, JobSpec.model_validate(data)).id
        started = time.perf_counter()
        status = execute_job(job_id)
        seconds = time.perf_counter() - started
        if status != "succeeded":
            raise SystemExit(f"the {data['name']} job ended {status}")
        if data is warm_up:
            setup = time.perf_counter() - setup_started
    with unit_of_work() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.started_at and job.finished_at
        runs = list(session.scalars(select(Run).where(Run.job_id == job_id)))
        stored = session.scalar(
            select(func.count())
            .select_from(StepMetric)
            .where(StepMetric.run_id.in_([r.id for r in runs]))
        )
        trials = [r for r in runs if r.role == TRIAL]
        reruns = [r for r in runs if r.role == RERUN]
        trained = sum(r.steps_done for r in runs)
        if stored != trained:
            raise SystemExit(
                f"optbench stored {stored} step rows of the {trained} steps it trained"
            )
        search_end = max(r.finished_at for r in trials if r.finished_at)
        result = {
            "seconds": seconds,
            "epochs": spec_data["epochs"],
            "setup_seconds": setup,
            "search_seconds": (search_end - job.started_at).total_seconds(),
            "rerun_seconds": (job.finished_at - search_end).total_seconds(),
            "trials": len(trials),
            "trial_steps": sum(r.steps_done for r in trials),
            "full_steps": sum(r.total_steps or 0 for r in trials),
            "rerun_steps": sum(r.steps_done for r in reruns),
            "stored_rows": stored,
            "pruned": sum(r.pruned_at_epoch is not None for r in trials),
            "diverged": sum(bool(r.diverged) for r in trials),
            "chosen_lr": {r.label: r.hyperparameters["lr"] for r in reruns},
            "fused": sorted({r.fusion or "" for r in trials if r.fused}),
            "database_mib": Path(home, "optbench.db").stat().st_size / 2**20
            if Path(home, "optbench.db").exists()
            else None,
        }
    result["peak_mib"] = _peak_mib()
    result["added_mib"] = _peak_mib() - before
    shutil.rmtree(home, ignore_errors=True)  # the stored study: checked above, not kept
    return result


# --- running and printing -------------------------------------------------------------------


def _child(target: Any, spec: dict[str, Any], threads: int, queue: Any) -> None:
    try:
        queue.put(target(spec, threads))
    except BaseException as error:  # the parent prints it and stops
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


def in_fresh_process(target: Any, spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """``target(spec, threads)`` in a spawned process: its own peak memory and imports."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, spec, threads, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    if "error" in result:
        raise SystemExit(f"{target.__name__} failed: {result['error']}")
    return result


def run_workload(
    workload: Workload, args: argparse.Namespace, peak: float, grid: list[float]
) -> dict[str, Any]:
    epochs, small = (3, 1) if args.quick else (args.epochs, args.small_epochs)
    spec = study_spec(workload, epochs, grid, args.quick, pruning=False)
    pruned_spec = study_spec(workload, epochs, grid, args.quick, pruning=True)
    small_spec = study_spec(workload, small, grid, args.quick, pruning=False)
    results: dict[str, Any] = {}
    measurements = [
        ("plain", plain_sweep, spec),
        ("optbench", optbench_sweep, spec),
        ("pruned", optbench_sweep, pruned_spec),
    ]
    if small:  # --small-epochs 0: no small job
        measurements += [
            ("small plain", plain_sweep, small_spec),
            ("small optbench", optbench_sweep, small_spec),
        ]
    for key, target, data in measurements:
        # The load average beside each measurement: on a shared machine it says which
        # side ran on a busier one.
        load = os.getloadavg()[0]
        print(f"[{workload.name}] {key} ({data['epochs']} epochs), load {load:.1f} ...", flush=True)
        results[key] = in_fresh_process(target, data, args.threads)
        results[key]["load_before"], results[key]["load_after"] = load, os.getloadavg()[0]
        print(f"    {results[key]['seconds']:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    report(workload, results, peak, len(grid))
    return results


def report(workload: Workload, results: dict[str, Any], peak: float, points: int) -> None:
    plain, full, pruned = results["plain"], results["optbench"], results["pruned"]
    flops = plain["flops_per_sample"]
    trials = 8 * points
    print(
        f"\n[{workload.name}] {trials} trials, MLP {workload.hidden}, batch {workload.batch_size}"
    )
    header = (
        f"{'':<24} {'epochs':>6} {'s':>8} {'samples/s':>11} {'x plain':>8} {'GFLOP/s':>8} "
        f"{'% peak':>7} {'peak MiB':>9} {'added MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    pairs = [
        ("plain loop", plain, plain),
        ("optbench", full, plain),
        ("optbench, pruned", pruned, plain),
    ]
    if "small plain" in results:
        pairs += [
            ("plain loop, small", results["small plain"], results["small plain"]),
            ("optbench, small", results["small optbench"], results["small plain"]),
        ]
    for name, result, base in pairs:
        # The trials' samples of the full sweep: what the plain loop trains too (a pruned
        # study trains fewer; its rate is "full-sweep samples answered per second").
        samples = base["samples"]
        rate = samples / result["seconds"]
        gflops = rate * flops / 1e9
        epochs = str(result["epochs"])
        print(
            f"{name:<24} {epochs:>6} {result['seconds']:>8.1f} {rate:>11,.0f} "
            f"{base['seconds'] / result['seconds']:>8.2f} {gflops:>8.2f} "
            f"{100 * gflops / peak:>6.1f}% "
            f"{result['peak_mib']:>9.0f} {result['added_mib']:>10.0f}"
        )
    studies = {"optbench": full, "pruned": pruned, "small": results.get("small optbench")}
    for name, result in ((n, r) for n, r in studies.items() if r is not None):
        print(
            f"  {name}: search {result['search_seconds']:.1f} s, reruns and summary "
            f"{result['rerun_seconds']:.1f} s (8 reruns, {result['rerun_steps']:,} steps), "
            f"setup and warm-up {result['setup_seconds']:.1f} s (not counted); "
            f"{result['stored_rows']:,} step rows stored; SQLite "
            f"{result['database_mib'] or 0:.0f} MiB; {result['diverged']} trials diverged; "
            f"{'; '.join(result['fused'])}"
        )
    saved = 1 - pruned["trial_steps"] / full["trial_steps"]
    print(
        f"  pruning ({PRUNING['rule']}, min_epochs {PRUNING['min_epochs']}, reduction_factor "
        f"{PRUNING['reduction_factor']}): {pruned['pruned']} of {pruned['trials']} trials "
        f"pruned; {pruned['trial_steps']:,} trial steps trained against {full['trial_steps']:,} "
        f"without pruning ({100 * saved:.0f}% saved; the grid's budget "
        f"{full['full_steps']:,}, less where trials diverged); "
        f"{full['seconds'] / pruned['seconds']:.2f}x faster than the full study"
    )
    print(f"  {'optimizer':<10} {'plain lr':>10} {'optbench lr':>12} {'pruned lr':>10}  same")
    for label, lr in full["chosen_lr"].items():
        same = "yes" if pruned["chosen_lr"].get(label) == lr else "NO"
        print(
            f"  {label:<10} {plain['chosen_lr'].get(label, math.nan):>10.3g} {lr:>12.3g} "
            f"{pruned['chosen_lr'].get(label, math.nan):>10.3g}  {same}"
        )
    print(flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 points, 3 epochs, small data")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the long job")
    parser.add_argument(
        "--small-epochs", type=int, default=3, help="epochs of the small job (0: none)"
    )
    parser.add_argument(
        "--points", type=int, help="learning rates in the grid (default 36; --quick: 4)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    args.points = args.points or (4 if args.quick else 36)
    if args.epochs < 1 or args.small_epochs < 0 or args.points < 1:
        parser.error("--epochs and --points are at least 1, --small-epochs at least 0")

    import torch

    from benchmarks.compare_baselines import matmul_gflops

    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    grid = lr_grid(args.points)
    began = time.perf_counter()
    print(f"machine: {cpu_description()}, torch {torch.__version__}, {args.threads} threads")
    peak = matmul_gflops()
    print(f"float32 2048x2048 matmul: {peak:.1f} GFLOP/s ({args.threads} threads)")
    print(f"learning rates: {len(grid)} from {grid[0]:g} to {grid[-1]:g}", flush=True)
    output: dict[str, Any] = {
        "machine": cpu_description(),
        "torch": torch.__version__,
        "threads": args.threads,
        "matmul_gflops": peak,
        "quick": args.quick,
        "grid": grid,
        "workloads": {},
    }
    for name in names:
        output["workloads"][name] = run_workload(WORKLOADS[name], args, peak, grid)
    output["total_seconds"] = time.perf_counter() - began
    print(
        f"machine at the end: {cpu_description()}; whole benchmark {output['total_seconds']:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
