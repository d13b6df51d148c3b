"""Suite scoring (services/suite/scores.py) against hand-computed values on planted times."""

from __future__ import annotations

import math
from typing import Any

import pytest

from services.spec import TargetSpec
from services.suite import scores
from services.suite.scores import WorkloadTimes, score_suite

INF = math.inf

# Three optimizers, four workloads, one study each, budget 100 steps:
#   w1: a 10, b 20, c miss        r: a 1, b 2, c inf
#   w2: a 30, b 30 (tie), c 60    r: a 1, b 1, c 2
#   w3: nobody reaches it         r: inf for all
#   w4: a miss, b 50, c 25        r: a inf, b 2, c 1
PLANTED = [
    WorkloadTimes("w1", {"a": [[12.0, 10.0]], "b": [[20.0, None]], "c": [[None, None]]}, {}, 100),
    WorkloadTimes("w2", {"a": [[30.0]], "b": [[30.0]], "c": [[60.0]]}, {}, 100),
    WorkloadTimes("w3", {"a": [[None]], "b": [[None]], "c": [[None]]}, {}, 100),
    WorkloadTimes("w4", {"a": [[None]], "b": [[50.0]], "c": [[25.0, 40.0]]}, {}, 100),
]


def cell(result: dict[str, Any], optimizer: str, workload: str) -> dict[str, Any]:
    return next(
        c for c in result["cells"] if c["optimizer"] == optimizer and c["workload"] == workload
    )


def row(result: dict[str, Any], optimizer: str) -> dict[str, Any]:
    return next(r for r in result["table"] if r["optimizer"] == optimizer)


def test_times_and_ratios_with_misses_ties_and_an_unsolved_workload() -> None:
    result = score_suite(["a", "b", "c"], PLANTED, "a")
    expected_t = {
        ("a", "w1"): 10.0, ("b", "w1"): 20.0, ("c", "w1"): None,
        ("a", "w2"): 30.0, ("b", "w2"): 30.0, ("c", "w2"): 60.0,
        ("a", "w3"): None, ("b", "w3"): None, ("c", "w3"): None,
        ("a", "w4"): None, ("b", "w4"): 50.0, ("c", "w4"): 25.0,
    }  # fmt: skip
    expected_r = {
        ("a", "w1"): 1.0, ("b", "w1"): 2.0, ("c", "w1"): None,
        ("a", "w2"): 1.0, ("b", "w2"): 1.0, ("c", "w2"): 2.0,
        ("a", "w3"): None, ("b", "w3"): None, ("c", "w3"): None,
        ("a", "w4"): None, ("b", "w4"): 2.0, ("c", "w4"): 1.0,
    }  # fmt: skip
    for (optimizer, workload), t in expected_t.items():
        got = cell(result, optimizer, workload)
        assert got["t"] == t, (optimizer, workload)
        assert got["r"] == expected_r[optimizer, workload], (optimizer, workload)
        assert got["solved_by_anyone"] is (workload != "w3")
    assert len(result["cells"]) == 12


def test_scores_are_the_exact_area_under_the_profile() -> None:
    # B = mean over the 4 workloads of max(0, 4 - r) / 3 (inf adds 0):
    # a: (3 + 3) / 12 = 0.5; b: (2 + 3 + 2) / 12 = 7/12; c: (2 + 3) / 12 = 5/12.
    result = score_suite(["a", "b", "c"], PLANTED, "a")
    assert row(result, "a")["score"] == pytest.approx(0.5, abs=1e-12)
    assert row(result, "b")["score"] == pytest.approx(7 / 12, abs=1e-12)
    assert row(result, "c")["score"] == pytest.approx(5 / 12, abs=1e-12)
    assert [r["optimizer"] for r in result["table"]] == ["b", "a", "c"]
    assert [r["rank"] for r in result["table"]] == [1, 2, 3]
    assert [r["solved"] for r in result["table"]] == [3, 2, 2]
    assert all(r["workloads"] == 4 for r in result["table"])


def test_the_profile_steps_at_each_ratio_and_counts_every_workload() -> None:
    result = score_suite(["a", "b", "c"], PLANTED, "a")
    tau, rho = result["profile"]["tau"], result["profile"]["rho"]
    assert tau[0] == 1.0 and tau[-1] == 4.0 and tau == sorted(tau)
    assert 2.0 in tau  # every finite r <= r_max is a grid point
    at = {t: i for i, t in enumerate(tau)}
    # the unsolved workload is in the denominator: a's rho tops out at 2/4
    assert rho["a"][at[1.0]] == 0.5 and rho["a"][-1] == 0.5
    assert rho["b"][at[1.0]] == 0.25 and rho["b"][at[2.0]] == 0.75
    assert rho["c"][at[1.0]] == 0.25 and rho["c"][at[2.0]] == 0.5
    below_two = max(t for t in tau if t < 2.0)
    assert rho["b"][at[below_two]] == 0.25
    # the exact integral against a fine trapezoid (what AlgoPerf does) on the step function
    fine = [1.0 + 3.0 * i / 30000 for i in range(30001)]
    values = [scores.rho([2.0, 1.0, INF, 2.0], t) for t in fine]
    trapezoid = sum((values[i] + values[i + 1]) / 2 * (fine[i + 1] - fine[i]) for i in range(30000))
    assert trapezoid / 3.0 == pytest.approx(7 / 12, abs=1e-4)


def test_speedup_counts_a_miss_as_the_budget_plus_one() -> None:
    # misses count 101: b/a = 2 * 1 * (101/101) * (50/101); c/a = (101/10) * 2 * 1 * (25/101)
    result = score_suite(["a", "b", "c"], PLANTED, "a")
    assert row(result, "a")["geomean_speedup"] == pytest.approx(1.0)
    assert row(result, "b")["geomean_speedup"] == pytest.approx((100 / 101) ** 0.25)
    assert row(result, "c")["geomean_speedup"] == pytest.approx(5**0.25)
    # against c: the reciprocal (a geometric mean of ratios)
    against_c = score_suite(["a", "b", "c"], PLANTED, "c")
    assert row(against_c, "a")["geomean_speedup"] == pytest.approx(5**-0.25)
    unknown = [WorkloadTimes("w", {"a": [[1.0]], "b": [[None]]}, {}, None)]
    assert row(score_suite(["a", "b"], unknown, "a"), "b")["geomean_speedup"] is None


def test_the_median_over_studies_counts_a_missed_study_as_infinite() -> None:
    three = WorkloadTimes(
        "w",
        {
            "a": [[12.0, 10.0, None], [None, None], [8.0]],  # 10, inf, 8 -> median 10
            "b": [[None], [None], [40.0]],  # inf, inf, 40 -> median inf
            "c": [[4.0], [6.0], [20.0, 5.0]],  # 4, 6, 5 -> median 5
        },
    )
    result = score_suite(["a", "b", "c"], [three], "a")
    assert cell(result, "a", "w")["t"] == 10.0
    assert cell(result, "a", "w")["t_per_study"] == [10.0, None, 8.0]
    assert cell(result, "b", "w")["t"] is None
    assert cell(result, "c", "w")["t"] == 5.0
    assert cell(result, "a", "w")["r"] == pytest.approx(2.0)
    two = WorkloadTimes("w", {"a": [[4.0], [6.0]], "b": [[5.0], [None]]})
    even = score_suite(["a", "b"], [two], "a")
    assert cell(even, "a", "w")["t"] == 5.0  # mean of the middle pair
    assert cell(even, "b", "w")["t"] is None  # (5 + inf) / 2
    assert scores.median_over_studies([]) == INF


def test_ties_share_a_rank_and_a_ratio_of_one() -> None:
    tied = [WorkloadTimes("w", {"a": [[7.0]], "b": [[7.0]], "c": [[14.0]]}, {}, 10)]
    result = score_suite(["a", "b", "c"], tied, "a")
    assert cell(result, "a", "w")["r"] == cell(result, "b", "w")["r"] == 1.0
    assert [(r["optimizer"], r["rank"]) for r in result["table"]] == [("a", 1), ("b", 1), ("c", 3)]
    assert row(result, "c")["score"] == pytest.approx(2 / 3)


def test_a_suite_nobody_solves_scores_zero_for_everyone() -> None:
    nothing = [WorkloadTimes("w", {"a": [[None]], "b": [[INF]]}, {}, 10)]
    result = score_suite(["a", "b"], nothing, "a")
    assert [r["score"] for r in result["table"]] == [0.0, 0.0]
    assert all(value == 0.0 for value in result["profile"]["rho"]["a"])
    assert row(result, "b")["geomean_speedup"] == pytest.approx(1.0)


def test_deepobs_speed_is_the_mean_first_epoch_over_the_reruns_that_reached() -> None:
    workload = WorkloadTimes(
        "w", {"a": [[1.0]], "b": [[None]]}, {"a": [3.0, 5.0, None], "b": [None, None]}
    )
    result = score_suite(["a", "b"], [workload], "a")
    assert cell(result, "a", "w")["speed_epochs"] == 4.0
    assert (cell(result, "a", "w")["speed_reached"], cell(result, "a", "w")["speed_reruns"]) == (
        2,
        3,
    )
    assert cell(result, "b", "w")["speed_epochs"] is None


def test_an_unknown_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="reference 'z'"):
        score_suite(["a"], PLANTED[:1], "z")


def test_time_measure_seconds_reads_the_attributed_training_seconds() -> None:
    from services.suite.results import run_times

    class Run:
        label, diverged, seed = "a", False, 0

    epochs = {
        "epoch": [1, 2, 3],
        "step": [10, 20, 30],
        "train_seconds": [0.5, 1.25, 2.0],
        "train_loss": [1.0, 0.5, 0.4],
        "val_accuracy": [0.5, 0.8, 0.95],
    }
    target = TargetSpec(metric="val_accuracy", value=0.8)
    times = run_times(target, Run(), epochs)  # type: ignore[arg-type]
    assert times == {"steps_to_target": 20, "seconds_to_target": 1.25, "epochs_to_target": 2}
    Run.diverged = True  # a diverged run reached nothing
    assert run_times(target, Run(), epochs)["steps_to_target"] is None  # type: ignore[arg-type]
    # the same planted times scored in seconds give the same ratios (only the unit changes)
    seconds = [
        WorkloadTimes(w.name, {k: [[None if t is None else t * 0.01 for t in s] for s in v]
                               for k, v in w.trials.items()}, {}, 1.0)
        for w in PLANTED
    ]  # fmt: skip
    result = score_suite(["a", "b", "c"], seconds, "a")
    assert row(result, "b")["score"] == pytest.approx(7 / 12)
    assert cell(result, "c", "w4")["t"] == pytest.approx(0.25)
    # misses count budget + 1 = 2 s: c/a = (2/0.1) * 2 * 1 * (0.25/2) = 5
    assert row(result, "c")["geomean_speedup"] == pytest.approx(5**0.25)


def test_workload_times_read_trials_reruns_and_the_budget_in_either_measure() -> None:
    from types import SimpleNamespace

    from services.spec.suite import SuiteSpec
    from services.suite.results import workload_times

    spec = {
        "workloads": [
            {
                "name": "iris",
                "dataset": {"name": "iris"},
                "model": {"name": "linear"},
                "epochs": 3,
                "target": {"metric": "val_accuracy", "value": 0.8},
            }
        ],
        "optimizers": [
            {"name": "gd", "lr": 0.5, "search": {"lr": {"log_uniform": [0.1, 1.0]}}},
            {"name": "sgd", "lr": 0.1, "search": {"lr": {"log_uniform": [0.01, 1.0]}}},
        ],
        "tuning": {"trials": 2, "rerun_seeds": 1, "baseline": False},
    }

    def run(id: int, label: str, role: str, total: int, diverged: bool = False) -> Any:
        return SimpleNamespace(
            id=id, label=label, role=role, seed=0, diverged=diverged, total_steps=total
        )

    def epochs(accuracies: list[float], steps_per_epoch: int) -> dict[str, list[Any]]:
        n = len(accuracies)
        return {
            "epoch": list(range(1, n + 1)),
            "step": [steps_per_epoch * k for k in range(1, n + 1)],
            "train_loss": [1.0] * n,
            "val_accuracy": accuracies,
            "train_seconds": [0.25 * k * steps_per_epoch for k in range(1, n + 1)],
        }

    runs = [
        run(1, "gd", "trial", 3),  # reaches 0.8 at epoch 2: step 2, 0.5 s
        run(2, "gd", "trial", 3, diverged=True),  # diverged: a miss whatever it stored
        run(3, "sgd", "trial", 30),  # epoch 3: step 30, 7.5 s
        run(4, "sgd", "trial", 30),  # never
        run(5, "gd", "rerun", 3),  # epoch 1
        run(6, "sgd", "rerun", 30),  # never
    ]
    stored = {
        1: epochs([0.5, 0.85, 0.9], 1),
        2: epochs([0.9, 0.9, 0.9], 1),
        3: epochs([0.5, 0.6, 0.8], 10),
        4: epochs([0.5, 0.6, 0.7], 10),
        5: epochs([0.81, 0.9, 0.9], 1),
        6: epochs([0.1, 0.2, 0.3], 10),
    }
    job = SimpleNamespace(suite_study=0, runs=runs)
    (steps,) = workload_times(SuiteSpec.model_validate(spec), {"iris": [job]}, stored)
    assert steps.trials == {"gd": [[2.0, None]], "sgd": [[30.0, None]]}
    assert steps.rerun_epochs == {"gd": [1.0], "sgd": [None]}
    assert steps.budget == 30  # the longest trial (sgd's mini-batches), not gd's 3 steps
    seconds_spec = SuiteSpec.model_validate({**spec, "time_measure": "seconds"})
    (seconds,) = workload_times(seconds_spec, {"iris": [job]}, stored)
    assert seconds.trials == {"gd": [[0.5, None]], "sgd": [[7.5, None]]}
    assert seconds.budget == 7.5  # the longest stored trial's training seconds
