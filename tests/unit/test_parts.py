"""Splitting a job's runs into parts, and choosing parts and threads (workers/parts.py)."""

from __future__ import annotations

import itertools

import pytest

from workers import parts as parts_module
from workers.engine import (
    DatasetConfig,
    Experiment,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    RunGroup,
)
from workers.parts import (
    THREADS_HELP_FROM_FLOPS,
    choose_parts,
    plan_parts,
    split_runs,
    step_flops,
)

_keys = itertools.count(1)


def run(steps: int = 100, key: int | None = None) -> RunConfig:
    # The cost function below reads the steps from the seed: RunConfig has no steps.
    optimizer = OptimizerConfig(label=f"r{steps}", name="sgd", torch_class="SGD")
    return RunConfig(key=key if key is not None else next(_keys), optimizer=optimizer, seed=steps)


def steps(r: RunConfig) -> float:
    return float(r.seed)


def fused(*runs: RunConfig) -> RunGroup:
    return RunGroup(tuple(runs), fused=True)


def alone(r: RunConfig) -> RunGroup:
    return RunGroup((r,), fused=False, reason="test")


def loads(parts: tuple[tuple[int, ...], ...], groups: list[RunGroup]) -> list[float]:
    cost = {r.key: steps(r) for g in groups for r in g.runs}
    return [sum(cost[key] for key in part) for part in parts]


def all_keys(groups: list[RunGroup]) -> list[int]:
    return [r.key for g in groups for r in g.runs]


def check_every_run_once(parts: tuple[tuple[int, ...], ...], groups: list[RunGroup]) -> None:
    flat = [key for part in parts for key in part]
    assert sorted(flat) == sorted(all_keys(groups))
    assert len(flat) == len(set(flat))


def lecture_groups() -> list[RunGroup]:
    """The lecture job: gd alone (10 full-batch steps), seven mini-batch runs fused."""
    return [alone(run(10)), fused(*(run(170) for _ in range(7)))]


def test_the_lecture_job_splits_into_two_balanced_parts_of_contiguous_sub_groups() -> None:
    groups = lecture_groups()
    parts = split_runs(groups, 2, steps)
    check_every_run_once(parts, groups)
    keys = all_keys(groups)
    gd, minibatch = keys[0], keys[1:]
    # Four fused runs on one part, three with gd on the other: 680 and 520 steps. Parts are
    # ordered by their first run, so gd's part comes first.
    assert parts == ((gd, *minibatch[4:]), tuple(minibatch[:4]))
    assert sorted(loads(parts, groups)) == [520, 680]


def test_fused_groups_that_fit_stay_whole() -> None:
    first = fused(*(run(100) for _ in range(4)))
    second = fused(*(run(100) for _ in range(4)))
    parts = split_runs([first, second], 2, steps)
    assert parts == (tuple(r.key for r in first.runs), tuple(r.key for r in second.runs))


def test_a_big_fused_group_is_cut_into_contiguous_sub_groups_across_parts() -> None:
    group = fused(*(run(50) for _ in range(10)))
    others = [alone(run(200)), alone(run(150))]
    groups = [*others, group]
    parts = split_runs(groups, 4, steps)
    check_every_run_once(parts, groups)
    members = [r.key for r in group.runs]
    for part in parts:
        mine = [key for key in part if key in members]
        if mine:  # one contiguous slice of the group's runs
            start = members.index(mine[0])
            assert mine == members[start : start + len(mine)]
    load = loads(parts, groups)
    assert max(load) - min(load) <= 50  # within one run of the fused group
    # 850 steps over 4 parts: 200 | 200 | 200 | 250 is the best whole runs allow.
    assert sorted(load) == [200, 200, 200, 250]


def test_runs_that_train_alone_are_balanced_largest_first() -> None:
    groups = [alone(run(s)) for s in (30, 70, 20, 50, 40, 60, 10)]
    parts = split_runs(groups, 2, steps)
    check_every_run_once(parts, groups)
    assert sorted(loads(parts, groups)) == [140, 140]
    for part in parts:  # the job's order within a part
        assert list(part) == sorted(part, key=all_keys(groups).index)


def test_never_more_parts_than_runs_and_no_empty_part() -> None:
    groups = [alone(run(5)), fused(run(5), run(5))]
    parts = split_runs(groups, 8, steps)
    assert len(parts) == 3 and all(len(part) == 1 for part in parts)
    assert split_runs(groups, 1, steps) == (tuple(all_keys(groups)),)
    assert split_runs([], 4, steps) == ()


@pytest.mark.parametrize("count", [1, 2, 3, 5, 16])
def test_the_split_is_deterministic_and_covers_every_run_once(count: int) -> None:
    groups = [
        alone(run(10)),
        fused(*(run(30) for _ in range(9))),
        alone(run(25)),
        fused(*(run(12) for _ in range(5))),
        alone(run(60)),
    ]
    parts = split_runs(groups, count, steps)
    check_every_run_once(parts, groups)
    assert len(parts) <= count
    assert split_runs(groups, count, steps) == parts
    # Sub-groups of a fused group keep the group's order; parts are ordered by first run.
    order = all_keys(groups)
    assert [order.index(part[0]) for part in parts] == sorted(order.index(p[0]) for p in parts)


def choose(
    setting: int | str = "auto",
    threads: int = 0,
    *,
    device: str = "cpu",
    cores: int = 2,
    runs: int = 8,
    flops: float | None = None,
    fit: int = 1000,
    max_parts: int | None = None,
) -> tuple[int, int]:
    def step_flops() -> float:
        assert flops is not None, "the work is only measured for auto on a CPU"
        return flops

    choice = choose_parts(
        setting,  # type: ignore[arg-type]
        threads,
        device=device,
        cores=cores,
        runs=runs,
        step_flops=step_flops,
        memory_parts=lambda: fit,
        max_parts=max_parts,
    )
    assert choice.reason
    return choice.parts, choice.threads


def test_auto_one_part_per_core_with_one_thread_for_small_steps() -> None:
    small = THREADS_HELP_FROM_FLOPS / 2
    assert choose(flops=small) == (2, 1)
    assert choose(flops=small, cores=16, runs=3) == (3, 1)  # at most one part per run
    assert choose(flops=small, runs=1) == (1, 1)  # a second thread only costs
    assert choose(flops=small, max_parts=1) == (1, 1)  # in-process: one part


def test_auto_cores_left_over_become_threads_once_a_step_is_large_enough() -> None:
    larger = THREADS_HELP_FROM_FLOPS
    assert choose(flops=larger) == (2, 1)
    assert choose(flops=larger, cores=16, runs=3) == (3, 5)
    assert choose(flops=larger, runs=1) == (1, 2)
    assert choose(flops=larger, max_parts=1) == (1, 2)


def test_auto_no_more_parts_than_copies_of_the_data_set_fit_in_memory() -> None:
    assert choose(flops=1e6, cores=16, fit=3) == (3, 1)
    assert choose(flops=1e9, cores=16, fit=0) == (1, 16)


def test_auto_above_the_threads_limit_one_part_with_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The measured limit is "never" on the 2-core machine (docs/cluster.md); the rule holds.
    monkeypatch.setattr(parts_module, "THREADS_FROM_FLOPS", 1e9)
    assert choose(flops=1e9, cores=4) == (1, 4)
    assert choose(flops=1e9 - 1, cores=4) == (4, 1)


def test_settings_and_cuda() -> None:
    assert choose(device="cuda", cores=16) == (1, 16)
    assert choose(3) == (3, 1)
    assert choose(3, 2) == (3, 2)
    assert choose(4, cores=8, runs=2) == (2, 4)
    assert choose(4, max_parts=1) == (1, 2)
    assert choose(flops=1e6, threads=2) == (2, 2)  # OPTBENCH_TORCH_THREADS wins


def mlp_experiment(hidden: int, features: int = 20, runs: int = 3) -> Experiment:
    optimizers = [
        RunConfig(
            key=index + 1,
            seed=0,
            optimizer=OptimizerConfig(label=f"sgd{index}", name="sgd", torch_class="SGD"),
        )
        for index in range(runs)
    ]
    config = JobConfig(
        dataset=DatasetConfig(
            "classification", {"n_samples": 500, "n_features": features, "n_classes": 4}
        ),
        model=ModelConfig("mlp", {"hidden": [hidden]}),
        runs=tuple(optimizers),
        epochs=1,
        batch_size=32,
    )
    return Experiment(config)


def test_step_flops_counts_a_forward_and_backward_pass_of_one_batch() -> None:
    experiment = mlp_experiment(hidden=64)
    weights = 20 * 64 + 64 * 4
    flops = step_flops(experiment)
    # Forward 2 x batch x weights, the weight gradients as much again, the input gradient of
    # every layer but the first; biases and activations are not counted.
    assert flops == 2 * 32 * weights * 2 + 2 * 32 * 64 * 4


def test_a_small_job_is_one_part() -> None:
    def choice(job: float) -> tuple[int, int]:
        made = choose_parts(
            "auto",
            0,
            device="cpu",
            cores=2,
            runs=8,
            step_flops=lambda: 2.6e6,  # the lecture's MLP on digits, batch 64
            job_flops=lambda step: job,
        )
        return made.parts, made.threads

    assert choice(parts_module.SMALL_JOB_FLOPS / 3) == (1, 1)  # the lecture at 20 epochs
    assert choice(parts_module.SMALL_JOB_FLOPS) == (2, 1)
    experiment = mlp_experiment(hidden=16, runs=5)
    plan = plan_parts(experiment, "auto", 0, cores=2)
    assert plan.parts == ((1, 2, 3, 4, 5),) and "a small job, one part" in plan.reason
    step = step_flops(experiment)
    steps = experiment.total_steps(experiment.config.runs[0])
    assert parts_module.job_flops(experiment, step) == pytest.approx(5 * steps * step, rel=0.1)


def test_plan_parts_of_a_real_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_module, "SMALL_JOB_FLOPS", 0.0)  # as if it were a large job
    experiment = mlp_experiment(hidden=16, runs=5)
    assert len(experiment.groups()) == 1  # five SGD runs, one fused group
    plan = plan_parts(experiment, "auto", 0, cores=2)  # cut into two contiguous sub-groups
    assert plan.parts == ((1, 2, 3), (4, 5)) and plan.threads == 1
    assert "MFLOP per step" in plan.reason
    one = plan_parts(experiment, "auto", 0, cores=2, max_parts=1)
    assert one.parts == ((1, 2, 3, 4, 5),) and one.threads == 1
    assert plan_parts(experiment, 1, 0, cores=2).threads == 2


def test_a_full_batch_run_costs_the_whole_split_per_step_when_balancing() -> None:
    gd = OptimizerConfig("gd", "gd", "SGD", {"lr": 0.5}, full_batch=True)
    sgd = OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.05})
    config = JobConfig(
        DatasetConfig("digits"),
        ModelConfig("mlp", {"hidden": [8]}),
        (RunConfig(1, gd, 0), RunConfig(2, sgd, 0)),
        epochs=2,
        batch_size=64,
    )
    experiment = Experiment(config)
    full, mini = config.runs
    assert parts_module.run_samples(experiment, full) == 2 * experiment.n_train
    assert parts_module.run_samples(experiment, mini) == experiment.total_steps(mini) * 64


def test_step_flops_are_counted_once_per_model_and_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[int] = []
    count = parts_module._count_step_flops
    monkeypatch.setattr(parts_module, "_STEP_FLOPS", {})
    monkeypatch.setattr(parts_module, "_count_step_flops", lambda e: counted.append(1) or count(e))
    first = step_flops(mlp_experiment(hidden=64))
    assert step_flops(mlp_experiment(hidden=64, runs=5)) == first  # the same model and data
    assert len(counted) == 1
    assert step_flops(mlp_experiment(hidden=32)) < first  # another model: counted again
    assert len(counted) == 2
