"""How large a fused group can be: memory and time per member as a sweep grows.

For each group size K it trains K SGD members (a log-spaced learning-rate sweep, one seed)
of one workload as one fused group (``fuse="always"``), in a fresh process each, and prints
the peak resident memory that training added (``ru_maxrss`` after minus before, after a
warm-up job in the same process), that per
member, the CPU seconds per step, and per member and step; the ratios are against the
smallest K measured in the same run.

    .venv/bin/python -m benchmarks.bench_group_size [--sizes 1,8,64,256] [--epochs 1]
        [--hidden 128] [--threads 1]

Digits (scikit-learn's 8x8 digits), MLP 64-<hidden>-10, batch 64, every step recorded into
no-op hooks: what the engine itself holds (the parameter bank and its gradients, each
member's optimizer state, the activations of one step, the buffered step values).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time


def measure(size: int, epochs: int, hidden: int, threads: int) -> tuple[float, float, int]:
    """(added peak RSS in MiB, CPU seconds, steps) of training one group of ``size``."""
    import torch

    from workers.engine import (
        DatasetConfig,
        Experiment,
        Hooks,
        JobConfig,
        ModelConfig,
        OptimizerConfig,
        RunConfig,
    )

    torch.set_num_threads(threads)

    def job(members: int, epochs: int) -> JobConfig:
        runs = tuple(
            RunConfig(k, OptimizerConfig(f"sgd-{k}", "sgd", "SGD", {"lr": 0.001 * 1.02**k}), 0)
            for k in range(members)
        )
        model = ModelConfig("mlp", {"hidden": [hidden]})
        return JobConfig(DatasetConfig("digits"), model, runs, epochs, 64, fuse="always")

    # A warm-up of two members for one epoch first: the data set, torch's lazy imports (an
    # optimizer's first step imports torch._dynamo, about 70 MiB) and the allocator's pools
    # are not what a member costs.
    Experiment(job(2, 1)).run_all(Hooks())
    config = job(size, epochs)
    runs = config.runs
    experiment = Experiment(config)
    experiment.groups()  # the probe and the plan: not part of what training adds
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    experiment.run_all(Hooks())
    seconds = time.process_time() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024, seconds, experiment.total_steps(runs[0])


def _child(size: int, epochs: int, hidden: int, threads: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(measure(size, epochs, hidden, threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,8,64,256")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
    print(f"digits, MLP 64-{args.hidden}-10, batch 64, {args.epochs} epoch(s), SGD sweep")
    print(f"{'K':>5} {'added MiB':>10} {'MiB/member':>11} {'ms/step':>9} {'µs/member-step':>15}")
    base: float | None = None
    for size in (int(value) for value in args.sizes.split(",")):
        queue = context.Queue()
        process = context.Process(
            target=_child, args=(size, args.epochs, args.hidden, args.threads, queue)
        )
        process.start()
        added, seconds, steps = queue.get()
        process.join()
        per_step = seconds / steps
        per_member = per_step / size
        base = base if base is not None else per_member
        print(
            f"{size:>5} {added:>10.1f} {added / size:>11.3f} {1e3 * per_step:>9.2f} "
            f"{1e6 * per_member:>15.1f}  ({per_member / base:.2f}x the first per member-step)"
        )


if __name__ == "__main__":
    main()
