"""Every stored number is the same on every execution path: a run trained in a fused group
stores, field by field, what the same run stores trained alone (float64, to 1e-9), and the
scores are in range on both. MLP and LeNet on a classification set, a regression, and a
landscape; one seed and three (members of several seeds gather their own batches)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from tests.invariants import assert_records_valid
from tests.unit.test_engine import LECTURE, job
from tests.unit.test_fusion import image_folder  # noqa: F401  (the fixture)
from workers.engine import DatasetConfig, Experiment, JobConfig, ModelConfig, OptimizerConfig
from workers.sinks.memory import MemorySink

TOLERANCE = 1e-9
STEP_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "grad_norm", "x", "y")
STEP_EVALUATION = ("val_loss", "val_accuracy")
EPOCH_FIELDS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
RESULT_FIELDS = ("steps", "diverged", "diverged_at_step", "test_loss", "test_accuracy")

REGRESSION = DatasetConfig(
    "regression", {"n_samples": 300, "n_features": 5, "n_informative": 3, "noise": 1.0}
)
# Optimizers for the regression and the landscape (the lecture's rates suit digits).
STEADY = [
    OptimizerConfig("gd", "gd", "SGD", {"lr": 0.01}, full_batch=True),
    OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.01}),
    OptimizerConfig("momentum", "momentum", "SGD", {"lr": 0.005, "momentum": 0.9}),
    OptimizerConfig("adam", "adam", "Adam", {"lr": 0.05}),
    OptimizerConfig("rmsprop", "rmsprop", "RMSprop", {"lr": 0.01}),
    OptimizerConfig("adafactor", "adafactor", "Adafactor", {"lr": 0.01}),
]


def train(config: JobConfig) -> MemorySink:
    sink = MemorySink()
    Experiment(config).run_all(sink)
    return sink


def assert_same(fused: MemorySink, alone: MemorySink, regression: bool = False) -> None:
    assert fused.results.keys() == alone.results.keys()
    for key in alone.results:
        for name, one, other in (
            ("steps", fused.steps[key], alone.steps[key]),
            ("epochs", fused.epochs[key], alone.epochs[key]),
        ):
            assert len(one) == len(other) > 0, (key, name)
            assert_records_valid(one, regression)
            assert_records_valid(other, regression)
        fields = STEP_FIELDS + STEP_EVALUATION
        for a, b in zip(fused.steps[key], alone.steps[key], strict=True):
            for field in fields:
                assert_close(
                    getattr(a, field), getattr(b, field), f"run {key} step {b.step} {field}"
                )
        for a, b in zip(fused.epochs[key], alone.epochs[key], strict=True):
            for field in (*EPOCH_FIELDS, "distance"):
                assert_close(getattr(a, field), getattr(b, field), f"run {key} epoch {field}")
        for field in RESULT_FIELDS:
            one, other = getattr(fused.results[key], field), getattr(alone.results[key], field)
            assert_close(one, other, f"run {key} result {field}")
        assert_records_valid([fused.results[key], alone.results[key]], regression)


def assert_close(one: object, other: object, where: str) -> None:
    if other is None or one is None:
        assert one is None and other is None, f"{where}: {one} vs {other}"
        return
    if isinstance(other, float):
        assert isinstance(one, float), where
        assert math.isclose(one, other, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (
            f"{where}: {one} vs {other}"
        )
        return
    assert one == other, f"{where}: {one} vs {other}"


def both_ways(config: JobConfig) -> tuple[MemorySink, MemorySink]:
    config = dataclasses.replace(config, dtype="float64")
    fused = train(dataclasses.replace(config, fuse="always"))
    alone = train(dataclasses.replace(config, fuse="never"))
    fused_runs = [result for result in fused.results.values() if result.fused]
    assert len(fused_runs) >= len(fused.results) - 1  # all but gd trained in one group
    assert not any(result.fused for result in alone.results.values())
    return fused, alone


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["one-seed", "three-seeds"])
def test_mlp_classification_stores_the_same_fused_and_alone(seeds: tuple[int, ...]) -> None:
    config = dataclasses.replace(job(LECTURE, seeds=seeds, epochs=2), eval_every_steps=5)
    fused, alone = both_ways(config)
    assert_same(fused, alone)
    accuracies = [step.accuracy for steps in fused.steps.values() for step in steps]
    assert max(accuracies) > 0.5  # the check above compared real scores, not empty ones


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["one-seed", "three-seeds"])
def test_lenet_stores_the_same_fused_and_alone(
    image_folder: Path,  # noqa: F811
    seeds: tuple[int, ...],
) -> None:
    config = job(LECTURE[1:4], seeds=seeds, epochs=1, model=ModelConfig("cnn", {}))
    images = DatasetConfig("mnist", {"folder": str(image_folder)})
    fused, alone = both_ways(dataclasses.replace(config, dataset=images, batch_size=32))
    assert_same(fused, alone)


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["one-seed", "three-seeds"])
def test_regression_stores_the_same_r2_fused_and_alone(seeds: tuple[int, ...]) -> None:
    config = job(STEADY, seeds=seeds, epochs=3, model=ModelConfig("mlp", {"hidden": [16]}))
    fused, alone = both_ways(dataclasses.replace(config, dataset=REGRESSION, batch_size=32))
    assert_same(fused, alone, regression=True)
    r2 = [step.accuracy for steps in fused.steps.values() for step in steps]
    assert all(value is not None for value in r2)  # a fused run stores its step R² too


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["one-seed", "three-seeds"])
def test_a_landscape_stores_the_same_trajectory_fused_and_alone(seeds: tuple[int, ...]) -> None:
    rosenbrock = DatasetConfig("rosenbrock", {"start": [-1.5, 2.0]})
    config = dataclasses.replace(job(STEADY, seeds=seeds, epochs=60), dataset=rosenbrock)
    fused, alone = both_ways(config)
    assert all(result.fused for result in fused.results.values())  # gd too: one step an epoch
    assert_same(fused, alone)
    first = fused.steps[0][0]
    assert (first.x, first.y) == (-1.5, 2.0) and first.accuracy is None
    assert all(epoch.distance is not None for epoch in fused.epochs[0])
