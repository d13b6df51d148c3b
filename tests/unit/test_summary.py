"""The per-optimizer summary: every number against a hand computation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from services.spec import JobSpec
from services.summary import RunView, paired_difference, summarize, t_975

DIGITS = {"name": "digits"}
MLP = {"model": {"name": "mlp", "hidden": [8]}}


def spec(optimizers: list[dict[str, Any]], **fields: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"dataset": DIGITS, **MLP, "optimizers": optimizers, "seeds": [0, 1, 2], **fields}
    )


def epochs(
    train_loss: Sequence[float],
    val_accuracy: Sequence[float | None] | None = None,
    *,
    distance: Sequence[float | None] | None = None,
    val_loss: Sequence[float] | None = None,
    steps_per_epoch: int = 10,
    seconds_per_epoch: float = 1.5,
) -> dict[str, list[Any]]:
    """A columnar epoch series: epoch k ends at step 10 k after 1.5 k training seconds."""
    n = len(train_loss)
    return {
        "epoch": list(range(1, n + 1)),
        "step": [steps_per_epoch * k for k in range(1, n + 1)],
        "train_loss": list(train_loss),
        "train_accuracy": [None] * n,
        "val_loss": list(val_loss) if val_loss is not None else [1.0] * n,
        "val_accuracy": list(val_accuracy) if val_accuracy is not None else [None] * n,
        "train_seconds": [seconds_per_epoch * k for k in range(1, n + 1)],
        "distance": list(distance) if distance is not None else [None] * n,
    }


def rows_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in summary["optimizers"]}


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


# Three optimizers, three seeds, target val_accuracy >= 0.9 (steps per epoch: 10).
CLASSIFICATION_RUNS = [
    # adam reaches it in every seed: epochs 2, 2, 1 (steps 20, 20, 10; seconds 3, 3, 1.5)
    RunView("adam", False, epochs([1.0, 0.25, 0.3], [0.8, 0.92, 0.95]), 0, 0.6),
    RunView("adam", False, epochs([1.1, 0.6, 0.4], [0.85, 0.92, 0.91]), 1, 0.7),
    RunView("adam", False, epochs([0.9, 0.4, 0.2], [0.91, 0.93, 0.96]), 2, 0.5),
    # sgd reaches it in seed 1 only (epoch 2)
    RunView("sgd", False, epochs([1.2, 1.0, 0.8], [0.7, 0.8, 0.85]), 0, 1.0),
    RunView("sgd", False, epochs([1.2, 0.9, 0.7], [0.7, 0.9, 0.93]), 1, 0.9),
    RunView("sgd", False, epochs([1.3, 1.0, 0.9], [0.6, 0.75, 0.86]), 2, 1.1),
    # rmsprop: seed 1 diverged after reaching the target: not reached, no values
    RunView("rmsprop", False, epochs([1.0, 0.5, 0.45], [0.8, 0.9, 0.94]), 0, 0.8),
    RunView("rmsprop", True, epochs([1.0, 50.0], [0.8, 0.95]), 1, 100.0),
    RunView("rmsprop", False, epochs([1.0, 0.6, 0.55], [0.85, 0.88, 0.92]), 2, 0.9),
]
CLASSIFICATION = spec(
    [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}, {"name": "rmsprop", "lr": 0.01}],
    target={"metric": "val_accuracy", "value": 0.9},
)


def test_means_std_median_of_every_metric() -> None:
    summary = summarize(CLASSIFICATION, CLASSIFICATION_RUNS)
    assert summary["task"] == "classification"
    assert summary["target"] == {"metric": "val_accuracy", "value": 0.9}
    assert [row["label"] for row in summary["optimizers"]] == ["sgd", "adam", "rmsprop"]
    adam = rows_of(summary)["adam"]
    assert adam["optimizer"] == "adam" and adam["runs"] == 3 and adam["diverged"] == 0
    # final train loss 0.3, 0.4, 0.2: mean 0.3, deviations 0, 0.1, -0.1 -> var 0.02/2, std 0.1
    assert adam["final_train_loss"] == approx(0.3)
    assert adam["stats"]["final_train_loss"] == {
        "mean": approx(0.3),
        "std": approx(0.1),
        "median": approx(0.3),
        "n": 3,
    }
    # best train loss 0.25, 0.4, 0.2
    assert adam["best_train_loss"] == approx(0.85 / 3)
    assert adam["stats"]["best_train_loss"]["median"] == approx(0.25)
    # final val accuracy 0.95, 0.91, 0.96; best 0.95, 0.92, 0.96
    assert adam["final_val_accuracy"] == approx(0.94)
    assert adam["final_target"] == approx(0.94)
    assert adam["best_val_accuracy"] == approx(2.83 / 3)
    assert adam["stats"]["best_val_accuracy"]["median"] == approx(0.95)
    # area under the loss curve: 0.6, 0.7, 0.5
    assert adam["auc_train_loss"] == approx(0.6)
    assert adam["stats"]["auc_train_loss"]["std"] == approx(0.1)
    # no distances in a classification job
    assert adam["final_distance"] is None
    assert adam["stats"]["final_distance"] == {"mean": None, "std": None, "median": None, "n": 0}


def test_to_target_over_reached_runs_and_the_success_rate() -> None:
    rows = rows_of(summarize(CLASSIFICATION, CLASSIFICATION_RUNS))
    adam, sgd = rows["adam"], rows["sgd"]
    # adam: steps 20, 20, 10 -> median 20, mean 50/3, std sqrt(((10/3)^2*2 + (20/3)^2) / 2)
    assert adam["steps_to_target"] == 20 and adam["epochs_to_target"] == 2
    assert adam["seconds_to_target"] == approx(3.0)
    assert adam["stats"]["steps_to_target"] == {
        "mean": approx(50 / 3),
        "std": approx(math.sqrt(100 / 3)),
        "median": 20,
        "n": 3,
    }
    assert adam["target_reached"] == "3/3" and adam["success_rate"] == 1.0
    # sgd: only seed 1 reached it (epoch 2); the others are not reached, never the budget
    assert sgd["target_reached"] == "1/3" and sgd["success_rate"] == approx(1 / 3)
    assert sgd["steps_to_target"] == 20 and sgd["epochs_to_target"] == 2
    assert sgd["seconds_to_target"] == approx(3.0)
    assert sgd["stats"]["steps_to_target"] == {"mean": 20, "std": None, "median": 20, "n": 1}
    # the values still count every seed
    assert sgd["stats"]["final_val_accuracy"]["n"] == 3
    assert sgd["final_val_accuracy"] == approx((0.85 + 0.93 + 0.86) / 3)


def test_a_diverged_run_is_not_reached_and_enters_no_value() -> None:
    rmsprop = rows_of(summarize(CLASSIFICATION, CLASSIFICATION_RUNS))["rmsprop"]
    assert rmsprop["runs"] == 3 and rmsprop["diverged"] == 1
    # seed 1 reached 0.95 before diverging: still not reached
    assert rmsprop["target_reached"] == "2/3" and rmsprop["success_rate"] == approx(2 / 3)
    # seeds 0 and 2 reached it at epochs 2 (0.9 counts: >=) and 3
    assert rmsprop["stats"]["steps_to_target"]["n"] == 2
    assert rmsprop["steps_to_target"] == 25  # steps 20 (seed 0) and 30 (seed 2)
    assert rmsprop["epochs_to_target"] == 2.5
    # its final loss 50 and its area 100 are left out: means over seeds 0 and 2
    assert rmsprop["final_train_loss"] == approx(0.5)
    assert rmsprop["best_train_loss"] == approx(0.5)
    assert rmsprop["auc_train_loss"] == approx(0.85)
    assert rmsprop["stats"]["final_train_loss"]["n"] == 2
    assert rmsprop["stats"]["final_train_loss"]["std"] == approx(0.05 * math.sqrt(2))


def test_rank_by_success_then_steps_then_final_value() -> None:
    summary = summarize(CLASSIFICATION, CLASSIFICATION_RUNS)
    rows = rows_of(summary)
    assert (rows["adam"]["rank"], rows["rmsprop"]["rank"], rows["sgd"]["rank"]) == (1, 2, 3)
    assert summary["best"] == "adam"


def test_paired_difference_against_the_best_with_its_t_interval() -> None:
    rows = rows_of(summarize(CLASSIFICATION, CLASSIFICATION_RUNS))
    assert rows["adam"]["paired"] is None  # the reference itself
    # sgd - adam on the final val accuracy, seed by seed: -0.10, +0.02, -0.10
    # mean -0.06; deviations -0.04, 0.08, -0.04 -> s^2 = 0.0096 / 2, s / sqrt(3) = 0.04
    # 95 %: -0.06 ± t(0.975, 2) * 0.04 = -0.06 ± 4.303 * 0.04
    sgd = rows["sgd"]["paired"]
    assert sgd["reference"] == "adam" and sgd["metric"] == "val_accuracy"
    assert sgd["n"] == 3 and sgd["seeds"] == [0, 1, 2]
    assert sgd["differences"] == [approx(-0.10), approx(0.02), approx(-0.10)]
    assert sgd["mean"] == approx(-0.06)
    assert sgd["ci95"] == [
        pytest.approx(-0.06 - 4.303 * 0.04, abs=1e-4),
        pytest.approx(-0.06 + 4.303 * 0.04, abs=1e-4),
    ]
    # rmsprop: seed 1 diverged, so only seeds 0 and 2 pair: -0.01, -0.04
    # mean -0.025, s = 0.03 / sqrt(2), s / sqrt(2) = 0.015; t(0.975, 1) = 12.706
    rmsprop = rows["rmsprop"]["paired"]
    assert rmsprop["seeds"] == [0, 2] and rmsprop["n"] == 2
    assert rmsprop["mean"] == approx(-0.025)
    assert rmsprop["ci95"] == [
        pytest.approx(-0.025 - 12.706 * 0.015, abs=1e-4),
        pytest.approx(-0.025 + 12.706 * 0.015, abs=1e-4),
    ]


def test_t_quantiles_and_the_interval_helper() -> None:
    assert t_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_975(30) == pytest.approx(2.042, abs=1e-3)
    assert t_975(500) == 1.96
    with pytest.raises(ValueError):
        t_975(0)
    mean, (low, high) = paired_difference([1.0, 2.0, 3.0])  # s = 1, s / sqrt(3)
    assert mean == 2.0
    assert (low, high) == (approx(2.0 - t_975(2) / math.sqrt(3)), approx(2 + t_975(2) / 3**0.5))
    with pytest.raises(ValueError):
        paired_difference([1.0])


def test_fewer_than_two_common_seeds_give_no_paired_difference() -> None:
    job = spec([{"name": "sgd"}, {"name": "adam"}], target={"metric": "val_accuracy", "value": 0.9})
    runs = [
        RunView("adam", False, epochs([0.5], [0.95]), 0),
        RunView("adam", False, epochs([0.5], [0.95]), 1),
        RunView("sgd", False, epochs([0.5], [0.80]), 0),
        RunView("sgd", True, epochs([0.5], [0.80]), 1),  # diverged: no final value
    ]
    rows = rows_of(summarize(job, runs))
    assert rows["adam"]["rank"] == 1 and rows["sgd"]["paired"] is None


def test_ties_share_a_rank_and_the_next_rank_skips() -> None:
    job = spec(
        [
            {"name": "sgd", "label": "a"},
            {"name": "sgd", "label": "b", "lr": 0.02},
            {"name": "sgd", "label": "c", "lr": 0.03},
            {"name": "sgd", "label": "d", "lr": 0.04},
            {"name": "sgd", "label": "e", "lr": 0.05},
            {"name": "sgd", "label": "f", "lr": 0.06},
            {"name": "sgd", "label": "g", "lr": 0.07},
        ],
        seeds=[0],
        target={"metric": "val_accuracy", "value": 0.9},
    )
    runs = [
        RunView("a", False, epochs([0.5, 0.4], [0.92, 0.95])),  # 1/1, step 10, final 0.95
        RunView("b", False, epochs([0.6, 0.5], [0.91, 0.95])),  # the same key as a
        RunView("c", False, epochs([0.5, 0.4], [0.8, 0.99])),  # 1/1 but step 20
        RunView("d", False, epochs([0.5, 0.4], [0.92, 0.93])),  # step 10, final 0.93
        RunView("e", False, epochs([0.5, 0.4], [0.7, 0.85])),  # not reached, final 0.85
        RunView("f", False, epochs([0.5, 0.4], [0.7, 0.80])),  # not reached, final 0.80
        RunView("g", True, epochs([0.5, 99.0], [0.95, 0.95])),  # diverged: nothing
    ]
    summary = summarize(job, runs)
    ranks = {row["label"]: row["rank"] for row in summary["optimizers"]}
    assert ranks == {"a": 1, "b": 1, "d": 3, "c": 4, "e": 5, "f": 6, "g": 7}
    assert summary["best"] == "a"  # the first of rank 1 in the spec's order
    assert all(row["paired"] is None for row in summary["optimizers"])  # one seed


def test_a_loss_target_ranks_lower_first() -> None:
    job = spec(
        [{"name": "sgd"}, {"name": "adam"}],
        seeds=[0],
        target={"metric": "val_loss", "value": 0.1},
    )
    runs = [
        RunView("sgd", False, epochs([0.5, 0.4], val_loss=[0.5, 0.3])),
        RunView("adam", False, epochs([0.5, 0.4], val_loss=[0.5, 0.2])),
    ]
    summary = summarize(job, runs)
    rows = rows_of(summary)
    assert rows["adam"]["final_target"] == approx(0.2) and rows["adam"]["rank"] == 1
    assert rows["sgd"]["rank"] == 2 and summary["best"] == "adam"
    assert rows["sgd"]["target_reached"] == "0/1" and rows["sgd"]["steps_to_target"] is None


def test_regression_reads_r2_from_the_accuracy_columns() -> None:
    job = JobSpec.model_validate(
        {
            "dataset": {"name": "regression"},
            **MLP,
            "optimizers": [{"name": "sgd"}, {"name": "adam"}],
            "seeds": [0, 1],
        }
    )
    assert job.effective_target.metric == "val_r2"
    runs = [
        RunView("sgd", False, epochs([2.0, 1.0], [-0.5, 0.6]), 0),
        RunView("sgd", False, epochs([2.0, 1.5], [0.2, 0.4]), 1),
        RunView("adam", False, epochs([1.0, 0.2], [0.7, 0.95]), 0),
        RunView("adam", False, epochs([1.0, 0.1], [0.91, 0.90]), 1),
    ]
    summary = summarize(job, runs)
    assert summary["task"] == "regression" and summary["best"] == "adam"
    rows = rows_of(summary)
    adam, sgd = rows["adam"], rows["sgd"]
    assert adam["target_reached"] == "2/2" and adam["steps_to_target"] == 15  # 20 and 10
    assert adam["best_val_accuracy"] == approx(0.93)  # 0.95, 0.91
    assert adam["final_val_accuracy"] == approx(0.925)  # 0.95, 0.90
    assert sgd["best_val_accuracy"] == approx(0.5)  # 0.6, 0.4
    assert sgd["stats"]["final_val_accuracy"]["std"] == approx(0.1 * math.sqrt(2))
    # sgd - adam on the final R²: 0.6 - 0.95 = -0.35, 0.4 - 0.90 = -0.50
    paired = sgd["paired"]
    assert paired["metric"] == "val_r2" and paired["reference"] == "adam"
    assert paired["mean"] == approx(-0.425)
    half = t_975(1) * (0.15 / math.sqrt(2)) / math.sqrt(2)  # s = 0.15 / sqrt(2)
    assert paired["ci95"] == [approx(-0.425 - half), approx(-0.425 + half)]


def test_a_landscape_has_distances_and_no_accuracy() -> None:
    job = JobSpec.model_validate(
        {
            "dataset": {"name": "rosenbrock"},
            "model": {"name": "point"},
            "optimizers": [{"name": "gd", "lr": 1e-3}, {"name": "adam", "lr": 0.05}],
            "epochs": 4,
            "seeds": [0, 1],
        }
    )
    target = job.effective_target
    assert (target.metric, target.value) == ("distance", 0.01)
    # one step per epoch on a landscape
    runs = [
        RunView("gd", False, epochs([4, 3, 2, 1], distance=[1, 0.5, 0.2, 0.1], steps_per_epoch=1)),
        RunView(
            "gd", False, epochs([4, 3, 2, 1], distance=[1, 0.4, 0.2, 0.05], steps_per_epoch=1), 1
        ),
        RunView(
            "adam",
            False,
            epochs([4, 1, 0.1, 0.01], distance=[1, 0.1, 0.01, 0.005], steps_per_epoch=1),
            0,
            1.2775,
        ),
        RunView(
            "adam",
            False,
            epochs([4, 1, 0.1, 0.02], distance=[1, 0.01, 0.005, 0.001], steps_per_epoch=1),
            1,
            1.28,
        ),
    ]
    summary = summarize(job, runs)
    assert summary["task"] == "landscape" and summary["best"] == "adam"
    rows = rows_of(summary)
    adam, gd = rows["adam"], rows["gd"]
    assert adam["final_val_accuracy"] is None and adam["best_val_accuracy"] is None
    assert adam["stats"]["best_val_accuracy"]["n"] == 0
    assert adam["final_distance"] == approx(0.003) and adam["final_target"] == approx(0.003)
    # adam reaches 0.01 (<=) at steps 3 and 2
    assert adam["steps_to_target"] == 2.5 and adam["epochs_to_target"] == 2.5
    assert adam["seconds_to_target"] == approx(3.75)  # 4.5 and 3.0
    assert adam["final_train_loss"] == approx(0.015) and adam["best_train_loss"] == approx(0.015)
    assert adam["auc_train_loss"] == approx(1.27875)
    assert gd["target_reached"] == "0/2" and gd["success_rate"] == 0.0
    assert gd["steps_to_target"] is None and gd["auc_train_loss"] is None
    assert gd["final_distance"] == approx(0.075) and gd["rank"] == 2
    # gd - adam on the final distance: 0.1 - 0.005 = 0.095, 0.05 - 0.001 = 0.049
    paired = gd["paired"]
    assert paired["metric"] == "distance" and paired["differences"] == [
        approx(0.095),
        approx(0.049),
    ]
    assert paired["mean"] == approx(0.072)


def test_a_label_without_runs_yet() -> None:
    job = spec([{"name": "sgd"}, {"name": "adam"}], target={"metric": "val_accuracy", "value": 0.9})
    summary = summarize(job, [RunView("sgd", False, {"epoch": [], "train_loss": []})])
    rows = rows_of(summary)
    assert rows["adam"]["runs"] == 0 and rows["adam"]["success_rate"] is None
    assert rows["adam"]["target_reached"] == "0/0"
    assert rows["sgd"]["target_reached"] == "0/1" and rows["sgd"]["final_train_loss"] is None
    assert [row["rank"] for row in summary["optimizers"]] == [1, 1]
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_non_finite_stored_values_are_ignored() -> None:
    job = spec([{"name": "sgd"}], seeds=[0], target={"metric": "val_accuracy", "value": 0.9})
    run = RunView("sgd", False, epochs([1.0, float("nan")], [0.5, float("inf")]), 0, float("nan"))
    row = summarize(job, [run])["optimizers"][0]
    assert row["final_train_loss"] == 1.0 and row["auc_train_loss"] is None
    assert row["final_val_accuracy"] == 0.5 and row["target_reached"] == "0/1"


def test_job_summary_reads_the_area_from_stored_steps(embedded_home: Path) -> None:
    from services.db import metric_writes, store
    from services.db.session import unit_of_work
    from services.summary import job_summary, mean_step_losses

    job_spec = spec(
        [{"name": "sgd"}, {"name": "adam"}],
        seeds=[0, 1],
        target={"metric": "val_accuracy", "value": 0.9},
    )
    # per run: step losses, and the epoch's (train loss, val accuracy) after 2 steps each
    data = {
        ("sgd", 0): ([2.0, 1.0, 0.6, 0.4], [(1.5, 0.8), (0.5, 0.85)]),
        ("adam", 0): ([2.0, 0.5, 0.3, 0.2], [(1.25, 0.9), (0.25, 0.95)]),
        ("sgd", 1): ([3.0, 1.0, 0.8, 0.2], [(2.0, 0.7), (0.5, 0.91)]),
        ("adam", 1): ([3.0, 0.6, 0.2, 0.2], [(1.8, 0.92), (0.2, 0.97)]),
    }
    with unit_of_work() as session:
        job = store.create_job(session, job_spec)
        for run in job.runs:
            losses, per_epoch = data[(run.label, run.seed)]
            steps = [
                {
                    "step": i + 1,
                    "epoch": i // 2 + 1,
                    "loss": loss,
                    "accuracy": None,
                    "lr": 0.1,
                    "grad_norm": 1.0,
                    "train_seconds": 0.5 * (i + 1),
                }
                for i, loss in enumerate(losses)
            ]
            assert metric_writes.write_steps(session, run.id, steps) == 4
            epoch_rows = [
                {
                    "epoch": e + 1,
                    "step": 2 * (e + 1),
                    "train_loss": train_loss,
                    "train_accuracy": None,
                    "val_loss": 1.0,
                    "val_accuracy": val_accuracy,
                    "train_seconds": 1.0 * (e + 1),
                    "distance": None,
                }
                for e, (train_loss, val_accuracy) in enumerate(per_epoch)
            ]
            assert metric_writes.write_epochs(session, run.id, epoch_rows) == 2
            # test results as the worker stores them: loss 0.5 + seed, accuracy 0.8 + seed/10
            run.test_loss, run.test_accuracy = 0.5 + run.seed, 0.8 + run.seed / 10
        ids = {(run.label, run.seed): run.id for run in job.runs}
        assert mean_step_losses(session, [ids[("sgd", 0)], ids[("adam", 1)]]) == {
            ids[("sgd", 0)]: approx(1.0),
            ids[("adam", 1)]: approx(1.0),
        }
        assert mean_step_losses(session, []) == {}
        summary = job_summary(session, job)

    rows = rows_of(summary)
    # mean step losses: sgd 1.0 and 1.25, adam 0.75 and 1.0
    assert rows["sgd"]["auc_train_loss"] == approx(1.125)
    assert rows["adam"]["auc_train_loss"] == approx(0.875)
    assert rows["adam"]["stats"]["auc_train_loss"]["std"] == approx(0.25 / math.sqrt(2))
    # adam reaches 0.9 at epoch 1 (step 2) twice; sgd at epoch 2 (step 4) in seed 1 only
    assert rows["adam"]["target_reached"] == "2/2" and rows["adam"]["steps_to_target"] == 2
    assert rows["sgd"]["target_reached"] == "1/2" and rows["sgd"]["seconds_to_target"] == 2.0
    assert summary["best"] == "adam" and rows["adam"]["rank"] == 1
    # paired by the seeds stored on the runs: 0.85 - 0.95, 0.91 - 0.97
    assert rows["sgd"]["paired"]["seeds"] == [0, 1]
    assert rows["sgd"]["paired"]["mean"] == approx(-0.08)
    # the runs' stored test results, averaged over seeds 0 and 1
    for label in ("sgd", "adam"):
        assert rows[label]["test_loss"] == approx(1.0)
        assert rows[label]["test_accuracy"] == approx(0.85)
        assert rows[label]["stats"]["test_loss"]["std"] == approx(math.sqrt(0.5))
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_the_api_s_summary_model_keeps_every_key_of_every_shape() -> None:
    """GET /v1/jobs/{id}/summary answers through SummaryOut, which drops keys it does not
    name: every summary (paired differences, diverged runs, a label without runs, a
    landscape) must come back from it unchanged."""
    from services.api.schemas import SummaryOut

    no_runs = spec([{"name": "sgd"}, {"name": "adam"}])
    landscape = JobSpec.model_validate(
        {
            "dataset": {"name": "rosenbrock"},
            "model": {"name": "point"},
            "optimizers": [{"name": "gd"}],
        }
    )
    summaries = [
        summarize(CLASSIFICATION, CLASSIFICATION_RUNS),
        summarize(no_runs, [RunView("sgd", False, {"epoch": [], "train_loss": []})]),
        summarize(landscape, [RunView("gd", False, epochs([4, 1], distance=[1, 0.001]))]),
        summarize(CLASSIFICATION, CLASSIFICATION_RUNS, task="regression"),
        summarize(
            spec([{"name": "adam"}], seeds=[0]),
            [RunView("adam", False, epochs([0.5], [0.9]), 0, 0.5, 0.4, 0.91)],
        ),
    ]
    assert summaries[-1]["optimizers"][0]["test_accuracy"] == 0.91
    assert any(row["paired"] for row in summaries[0]["optimizers"])
    for summary in summaries:
        stored = json.loads(json.dumps(summary, allow_nan=False))  # as a finished job holds it
        assert "study" not in stored and all("role" not in row for row in stored["optimizers"])
        # a plain job's stored summary is unchanged; the model adds only the study's keys, None
        expected = {
            **stored,
            "study": None,
            "optimizers": [{**row, "role": None} for row in stored["optimizers"]],
        }
        assert SummaryOut.model_validate(stored).model_dump(mode="json") == expected


# ---------------------------------------------------------------- test-split results


def test_test_results_are_means_over_seeds_without_diverged_runs() -> None:
    job = spec(
        [{"name": "sgd"}, {"name": "adam"}, {"name": "rmsprop"}],
        target={"metric": "val_accuracy", "value": 0.9},
    )
    runs = [
        # adam: test loss 0.3, 0.5, 0.4 (mean 0.4, std 0.1); accuracy 0.9, 0.8, 0.85
        RunView("adam", False, epochs([0.5]), 0, test_loss=0.3, test_accuracy=0.9),
        RunView("adam", False, epochs([0.5]), 1, test_loss=0.5, test_accuracy=0.8),
        RunView("adam", False, epochs([0.5]), 2, test_loss=0.4, test_accuracy=0.85),
        # sgd: seed 1 diverged (the worker gives it no test result; were one stored, it
        # would still be left out like its other values), seed 2 has a NaN stored
        RunView("sgd", False, epochs([1.0]), 0, test_loss=1.2, test_accuracy=0.6),
        RunView("sgd", True, epochs([1.0]), 1, test_loss=9.0, test_accuracy=0.1),
        RunView("sgd", False, epochs([1.0]), 2, test_loss=float("nan"), test_accuracy=0.7),
        # rmsprop: never evaluated on a test split
        RunView("rmsprop", False, epochs([1.0]), 0),
    ]
    rows = rows_of(summarize(job, runs))
    adam, sgd, rmsprop = rows["adam"], rows["sgd"], rows["rmsprop"]
    assert adam["test_loss"] == approx(0.4) and adam["test_accuracy"] == approx(0.85)
    assert adam["stats"]["test_loss"] == {
        "mean": approx(0.4),
        "std": approx(0.1),
        "median": approx(0.4),
        "n": 3,
    }
    assert adam["stats"]["test_accuracy"]["std"] == approx(0.05)
    assert sgd["test_loss"] == approx(1.2) and sgd["stats"]["test_loss"]["n"] == 1
    assert sgd["test_accuracy"] == approx(0.65) and sgd["stats"]["test_accuracy"]["n"] == 2
    assert rmsprop["test_loss"] is None and rmsprop["test_accuracy"] is None
    assert rmsprop["stats"]["test_loss"] == {"mean": None, "std": None, "median": None, "n": 0}
    # they rank nothing: the ranking is the target's (every final val accuracy is None here)
    assert [rows[label]["rank"] for label in ("sgd", "adam", "rmsprop")] == [1, 1, 1]


def _stored_before_test_results(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as jobs that ended before the test results were summarized hold it."""
    old = json.loads(json.dumps(summary, allow_nan=False))
    for row in old["optimizers"]:
        for name in ("test_loss", "test_accuracy"):
            del row[name], row["stats"][name]
    return old


def test_a_summary_stored_before_test_results_reads_them_as_none(embedded_home: Path) -> None:
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.api.schemas import SummaryOut
    from services.db import store
    from services.db.models import SUCCEEDED, Job
    from services.db.session import unit_of_work
    from services.summary import current_summary
    from tests.support import local_client

    runs = [RunView("adam", False, epochs([0.5], [0.95]), 0, test_loss=0.3, test_accuracy=0.9)]
    old = _stored_before_test_results(summarize(spec([{"name": "adam"}], seeds=[0]), runs))
    assert "test_loss" not in old["optimizers"][0]
    # the API model defaults them
    row = SummaryOut.model_validate(old).optimizers[0]
    assert (row.test_loss, row.test_accuracy) == (None, None)

    with unit_of_work() as session:
        job = store.create_job(session, spec([{"name": "adam"}], seeds=[0]))
        job.status, job.summary = SUCCEEDED, old
        job_id = job.id
    with unit_of_work() as session:
        stored = session.get(Job, job_id)
        assert stored is not None
        summary = current_summary(session, stored)  # what the exports and the report read
    (row_dict,) = summary["optimizers"]
    assert row_dict["test_loss"] is None and row_dict["test_accuracy"] is None
    assert row_dict["stats"]["test_loss"]["n"] == 0
    assert row_dict["final_val_accuracy"] == approx(0.95)  # the stored values stay
    client: TestClient
    with local_client(create_app()) as client:
        body = client.get(f"/v1/jobs/{job_id}/summary").json()
    assert body["optimizers"][0]["test_loss"] is None
    assert body["optimizers"][0]["stats"]["test_accuracy"]["n"] == 0
    assert body["optimizers"][0]["final_val_accuracy"] == approx(0.95)
