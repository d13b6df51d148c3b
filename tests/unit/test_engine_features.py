"""Schedules, landscapes, divergence, evaluation cadence, regression, models, precision."""

from __future__ import annotations

import math
import time

import pytest
import torch

from workers.engine import (
    DatasetConfig,
    Experiment,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
)
from workers.engine.landscapes import LANDSCAPES
from workers.engine.models import build
from workers.engine.problem import Problem
from workers.sinks.memory import MemorySink


def run_one(
    optimizer: OptimizerConfig,
    *,
    dataset: DatasetConfig | None = None,
    model: ModelConfig | None = None,
    epochs: int = 2,
    **job: object,
) -> MemorySink:
    config = JobConfig(
        dataset=dataset or DatasetConfig("digits"),
        model=model or ModelConfig("mlp", {"hidden": [16]}),
        runs=(RunConfig(0, optimizer, 0),),
        epochs=epochs,
        batch_size=64,
        **job,  # type: ignore[arg-type]
    )
    sink = MemorySink()
    Experiment(config).run_all(sink)
    return sink


def sgd(lr: float = 0.1, schedule: dict | None = None, **extra: object) -> OptimizerConfig:
    return OptimizerConfig("sgd", "sgd", "SGD", {"lr": lr, **extra}, schedule=schedule)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"name": "step", "step_size": 5, "gamma": 0.5}, lambda s: 0.1 * 0.5 ** ((s - 1) // 5)),
        (
            {"name": "multistep", "milestones": [3, 7], "gamma": 0.1},
            lambda s: 0.1 * 0.1 ** ((s > 3) + (s > 7)),
        ),
        ({"name": "exponential", "gamma": 0.9}, lambda s: 0.1 * 0.9 ** (s - 1)),
        (
            {"name": "cosine", "t_max": None, "eta_min": 0.0},
            lambda s: 0.05 * (1 + math.cos(math.pi * (s - 1) / 34)),
        ),
    ],
)
def test_recorded_lr_is_the_one_each_step_used(schedule: dict, expected) -> None:  # type: ignore[no-untyped-def]
    # digits: 1,797 samples, 60 % for training = 1,077 in 17 batches of 64; 2 epochs
    sink = run_one(sgd(schedule=schedule))
    lrs = [record.lr for record in sink.steps[0]]
    assert len(lrs) == 34
    assert lrs == pytest.approx([expected(s) for s in range(1, 35)], rel=1e-9)


def test_warmup_cosine_and_onecycle_rise_then_fall() -> None:
    warm = run_one(
        sgd(
            schedule={
                "name": "warmup_cosine",
                "warmup_steps": 10,
                "start_factor": 0.1,
                "eta_min": 0.0,
            }
        )
    )
    lrs = [r.lr for r in warm.steps[0]]
    assert lrs[0] == pytest.approx(0.01) and max(lrs) == pytest.approx(0.1)
    assert lrs.index(max(lrs)) == 10 and lrs[-1] < 0.01
    cycle = run_one(
        OptimizerConfig(
            "adam",
            "adam",
            "Adam",
            {"lr": 1e-3},
            schedule={
                "name": "onecycle",
                "max_lr": 0.01,
                "pct_start": 0.25,
                "anneal_strategy": "cos",
                "div_factor": 25.0,
                "final_div_factor": 1e4,
            },
        )
    )
    lrs = [r.lr for r in cycle.steps[0]]
    assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs[-1] < lrs[0]


def test_plateau_cuts_the_rate_once_per_epoch_on_validation_loss() -> None:
    sink = run_one(
        sgd(
            lr=0.5,
            schedule={
                "name": "plateau",
                "factor": 0.5,
                "patience": 0,
                "threshold": 10.0,
                "min_lr": 0.0,
            },
        ),
        epochs=3,
    )
    per_epoch = [{r.lr for r in sink.steps[0] if r.epoch == e} for e in (1, 2, 3)]
    assert per_epoch == [{0.5}, {0.25}, {0.125}]  # "no improvement" by a huge threshold


def test_landscape_records_the_trajectory_and_the_distance_to_the_minimum() -> None:
    sink = run_one(
        OptimizerConfig("adam", "adam", "Adam", {"lr": 0.1}),
        dataset=DatasetConfig("quadratic", {"start": [-4.0, 1.0], "condition": 25.0}),
        model=ModelConfig("point"),
        epochs=300,
    )
    steps, epochs = sink.steps[0], sink.epochs[0]
    assert len(steps) == len(epochs) == 300  # one step per epoch
    assert (steps[0].x, steps[0].y) == (-4.0, 1.0)
    assert steps[0].loss == pytest.approx(0.5 * (16 + 25))
    f = LANDSCAPES.get("quadratic")(condition=25.0)
    for record in steps[:20]:
        assert record.loss == pytest.approx(float(f(torch.tensor([record.x, record.y]))))
    assert epochs[-1].distance < 0.05 < epochs[0].distance


@pytest.mark.parametrize("name", LANDSCAPES.names())
def test_every_landscape_is_minimal_at_its_minima(name: str) -> None:
    landscape = LANDSCAPES.get(name)()
    for minimum in landscape.minima:
        point = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
        value = landscape(point)
        value.backward()
        assert float(point.grad.norm()) < 1e-3, name  # type: ignore[union-attr]
        assert landscape.distance(point.detach()) == pytest.approx(0.0)


def test_loss_growing_past_the_bound_is_divergence_at_that_step() -> None:
    sink = run_one(
        OptimizerConfig("sgd", "sgd", "SGD", {"lr": 1.05}),
        dataset=DatasetConfig("quadratic", {"start": [1.0, 1.0], "condition": 2.0}),
        model=ModelConfig("point"),
        epochs=500,
        divergence_ratio=100.0,
    )
    result = sink.results[0]  # lr x curvature 2 = 2.1 > 2: |y| grows 1.1x per step
    assert result.diverged and result.diverged_at_step is not None
    last = sink.steps[0][-1]
    assert last.step == result.diverged_at_step - 1 and last.loss <= 100 * 1.5


def test_sgd_at_lr_1e6_diverges_and_stops_early() -> None:
    sink = run_one(sgd(lr=1e6), epochs=3)
    assert sink.results[0].diverged and sink.results[0].steps < 60


def test_mid_epoch_evaluation_is_attached_to_its_steps_and_not_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake clock: each reading advances 1 ms, each evaluation 100 s. Counted evaluations
    # would put hundreds of seconds into train_seconds.
    clock = [0.0]

    def perf_counter() -> float:
        clock[0] += 0.001
        return clock[0]

    evaluate = Problem.evaluate

    def slow_evaluate(self, *args):  # type: ignore[no-untyped-def]
        clock[0] += 100.0
        return evaluate(self, *args)

    monkeypatch.setattr(time, "perf_counter", perf_counter)
    monkeypatch.setattr(Problem, "evaluate", slow_evaluate)
    sink = run_one(sgd(), eval_every_steps=7, flush_every=5)
    assert sink.steps[0][-1].train_seconds < 1.0  # 34 steps of 1 ms, no evaluation in it
    evaluated = [r.step for r in sink.steps[0] if r.val_loss is not None]
    assert evaluated == [7, 14, 21, 28]  # of 34 steps
    assert all(0 <= r.val_accuracy <= 1 for r in sink.steps[0] if r.val_accuracy is not None)


def test_regression_trains_with_mse_and_reports_r2() -> None:
    sink = run_one(
        OptimizerConfig("adam", "adam", "Adam", {"lr": 0.05}),
        dataset=DatasetConfig(
            "regression", {"n_samples": 400, "n_features": 5, "n_informative": 3, "noise": 1.0}
        ),
        model=ModelConfig("linear"),
        epochs=20,
    )
    final = sink.epochs[0][-1]
    assert final.val_accuracy > 0.95  # R², a linear problem
    assert final.val_loss < sink.steps[0][0].loss
    assert sink.results[0].test_accuracy > 0.95


@pytest.mark.parametrize(
    ("name", "shape"), [("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)), ("resnet", (3, 32, 32))]
)
def test_image_models_map_images_to_class_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build(ModelConfig(name), shape, 10)
    assert model(torch.zeros(4, *shape)).shape == (4, 10)


def test_image_models_refuse_flat_features_with_advice() -> None:
    with pytest.raises(ValueError, match="needs images"):
        build(ModelConfig("cnn"), (64,), 10)


def test_mlp_options_build_the_layers_asked_for() -> None:
    model = build(ModelConfig("mlp", {"hidden": [8, 8], "dropout": 0.5, "norm": "layer"}), (4,), 3)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds.count("LayerNorm") == 2 and kinds.count("Dropout") == 2
    batch = run_one(
        sgd(), model=ModelConfig("mlp", {"hidden": [16], "norm": "batch", "dropout": 0.2})
    )
    assert not batch.results[0].diverged


def test_mixed_precision_trains_in_bfloat16_autocast() -> None:
    exact = run_one(sgd())
    mixed = run_one(sgd(), mixed_precision=True)
    assert mixed.steps[0][0].loss == pytest.approx(exact.steps[0][0].loss, rel=2e-2)
    assert mixed.steps[0][0].loss != exact.steps[0][0].loss
    assert mixed.epochs[0][-1].val_accuracy > 0.5
