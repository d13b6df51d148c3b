"""Fused against one-by-one training, in process, on the engine alone (no database).

For each workload it builds one ``Experiment`` (the lecture's seven mini-batch optimizers,
one seed) and trains it with fusion forced on (``fuse="always"``) and off (``"never"``),
alternating, and prints the median CPU seconds of each and the ratio. CPU seconds of this
process (``time.process_time``) rather than wall time, because the ratio is about the work
and the machine may be busy; with one thread the two agree on an idle machine.

``--wrapped-step`` adds a third column, fused with every optimizer called as
``optimizer.step()`` (the engine before ``step.direct_step``), alternating with the others,
so that change is measured in the same run as the plain path.

    .venv/bin/python -m benchmarks.bench_fusion [--threads 1] [--repeats 3] [--quick]
        [--wrapped-step] [--only digits]

The digits workload ships with scikit-learn; the 28x28 workloads use synthetic MNIST-shaped
IDX files written to a temporary folder (benchmarks/support.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.support import write_synthetic_mnist
from workers.engine import (
    DatasetConfig,
    Experiment,
    Hooks,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    step,
)

LECTURE_MINI_BATCH = [
    OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.05}),
    OptimizerConfig("momentum", "momentum", "SGD", {"lr": 0.05, "momentum": 0.9}),
    OptimizerConfig("nag", "nag", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    OptimizerConfig("adagrad", "adagrad", "Adagrad", {"lr": 0.05}),
    OptimizerConfig("rmsprop", "rmsprop", "RMSprop", {"lr": 0.001}),
    OptimizerConfig("adadelta", "adadelta", "Adadelta", {"lr": 1.0}),
    OptimizerConfig("adam", "adam", "Adam", {"lr": 0.001}),
]


def workloads(folder: Path, quick: bool) -> dict[str, tuple[DatasetConfig, ModelConfig, int, int]]:
    """name: (data set, model, batch size, epochs)."""
    mnist = DatasetConfig("mnist", {"folder": str(folder)})
    return {
        "digits mlp 64-128-10": (
            DatasetConfig("digits"),
            ModelConfig("mlp", {"hidden": [128]}),
            64,
            5 if quick else 30,
        ),
        "mnist1d mlp 40-256-256-10": (
            DatasetConfig("mnist1d"),
            ModelConfig("mlp", {"hidden": [256, 256]}),
            128,
            1 if quick else 5,
        ),
        "28x28 mlp 784-256-10": (
            mnist,
            ModelConfig("mlp", {"hidden": [256]}),
            128,
            1 if quick else 3,
        ),
        "28x28 lenet-5": (mnist, ModelConfig("cnn", {}), 128, 1),
    }


def cpu_seconds(experiment: Experiment) -> float:
    started = time.process_time()
    experiment.run_all(Hooks())
    return time.process_time() - started


def wrapped_cpu_seconds(experiment: Experiment) -> float:
    """``cpu_seconds`` with every optimizer called through ``optimizer.step()``."""
    before, step.DIRECT_STEP = step.DIRECT_STEP, False
    try:
        return cpu_seconds(experiment)
    finally:
        step.DIRECT_STEP = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs, a smoke check")
    parser.add_argument(
        "--wrapped-step",
        action="store_true",
        help="also fused with optimizer.step() per member (the engine before direct_step)",
    )
    parser.add_argument("--only", help="only the workloads whose name contains this")
    parser.add_argument("--epochs", type=int, help="epochs of every workload (default: its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats}")
    wrapped = f" {'wrapped s':>9} {'direct/wrapped':>14}" if args.wrapped_step else ""
    print(f"{'workload':<28} {'fused s':>8} {'alone s':>8} {'speed-up':>9}{wrapped}  auto plan")
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_mnist(Path(tmp), samples=3_000 if args.quick else 10_000)
        for name, (data, model, batch, epochs) in workloads(Path(tmp), args.quick).items():
            if args.only and args.only not in name:
                continue
            epochs = args.epochs or epochs
            runs = tuple(RunConfig(k, o, 0) for k, o in enumerate(LECTURE_MINI_BATCH))
            config = JobConfig(data, model, runs, epochs=epochs, batch_size=batch)
            fused = Experiment(dataclasses.replace(config, fuse="always"))
            alone = Experiment(dataclasses.replace(config, fuse="never"))
            auto = Experiment(config).groups()
            plan = "fused" if any(g.fused for g in auto) else "alone"
            cpu_seconds(fused), cpu_seconds(alone)  # warm-up: allocator, kernels, caches
            times: dict[str, list[float]] = {"fused": [], "alone": [], "wrapped": []}
            for _ in range(args.repeats):
                times["fused"].append(cpu_seconds(fused))
                times["alone"].append(cpu_seconds(alone))
                if args.wrapped_step:
                    times["wrapped"].append(wrapped_cpu_seconds(fused))
            f, a = statistics.median(times["fused"]), statistics.median(times["alone"])
            line = f"{name:<28} {f:8.2f} {a:8.2f} {a / f:8.2f}x"
            if args.wrapped_step:
                w = statistics.median(times["wrapped"])
                line += f" {w:9.2f} {w / f:13.2f}x"
            print(f"{line}  {plan}", flush=True)


if __name__ == "__main__":
    main()
