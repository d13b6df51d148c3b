"""Checkpoints in the engine: a run stopped after a checkpoint and resumed from it (in a new
Experiment, the state having gone through bytes) records exactly what an uninterrupted run
records, alone or fused, mid-epoch or at an epoch end, with schedules, dropout and batch
norm."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import pytest
import torch

from tests.unit.test_engine import LECTURE, job
from workers.engine import (
    DatasetConfig,
    Experiment,
    Hooks,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
)
from workers.engine.checkpoint import RunState
from workers.engine.hooks import CompositeHooks, StepColumns, StepRecord
from workers.sinks.memory import MemorySink


class Crash(Exception):
    """The worker died."""


class Checkpoints(Hooks):
    """Keeps each run's latest checkpoint as bytes, as a store would; crashes the training
    at the first flush past ``crash_after`` steps once a checkpoint exists."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.saved: dict[int, bytes] = {}
        self.steps: dict[int, int] = {}
        self.crash_after = crash_after

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        for run, state in states:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.saved[run.key] = buffer.getvalue()
            self.steps[run.key] = state.step

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        last = max(int(steps.step[-1]) for _, steps in batch)
        if self.crash_after is not None and self.saved and last > self.crash_after:
            raise Crash

    def states(self) -> dict[int, RunState]:
        return {
            key: torch.load(io.BytesIO(data), weights_only=False)
            for key, data in self.saved.items()
        }


def with_checkpoints(config: JobConfig, every: int) -> JobConfig:
    return dataclasses.replace(config, checkpoint_every_steps=every, checkpoint_min_seconds=0)


def interrupted(config: JobConfig, crash_after: int) -> tuple[MemorySink, MemorySink, Checkpoints]:
    """Train until a crash past ``crash_after`` steps, then resume in a new Experiment.
    Returns what the first attempt recorded, what the resumed one recorded, the store."""
    first, store = MemorySink(), Checkpoints(crash_after)
    with pytest.raises(Crash):
        Experiment(config).run_all(CompositeHooks(first, store))
    experiment = Experiment(config)
    # As a redelivered part: the runs that did not finish, each from its checkpoint if any.
    open_keys = [run.key for run in config.runs if run.key not in first.results]
    resume = experiment.resumable(store.states(), open_keys)
    assert resume, "the checkpoints fit the runs as they train now"
    second = MemorySink()
    experiment.run_all(second, keys=open_keys, resume=resume)
    for key in first.results:
        second.steps[key], second.epochs[key] = [], []
        second.results[key] = first.results[key]
    store.steps = {key: store.steps.get(key, 0) for key in open_keys} | {
        key: first.steps[key][-1].step for key in first.results
    }
    return first, second, store


def joined(first: MemorySink, second: MemorySink, key: int, through: int) -> list[StepRecord]:
    """The series a store ends with: steps up to the checkpoint, then the resumed ones."""
    return [r for r in first.steps[key] if r.step <= through] + second.steps[key]


def assert_same(
    expected: MemorySink, first: MemorySink, second: MemorySink, store: Checkpoints
) -> None:
    for key, records in expected.steps.items():
        through = store.steps[key]
        series = joined(first, second, key, through)
        assert [r.step for r in series] == [r.step for r in records]
        for got, want in zip(series, records, strict=True):
            assert got.loss == want.loss and got.accuracy == want.accuracy, (key, got.step)
            assert got.lr == want.lr and got.grad_norm == want.grad_norm, (key, got.step)
        epochs_done = max((e.epoch for e in first.epochs[key] if e.step <= through), default=0)
        epochs = [e for e in first.epochs[key] if e.epoch <= epochs_done] + second.epochs[key]
        assert [(e.epoch, e.train_loss, e.val_loss, e.val_accuracy) for e in epochs] == [
            (e.epoch, e.train_loss, e.val_loss, e.val_accuracy) for e in expected.epochs[key]
        ]
        assert second.results[key].test_loss == expected.results[key].test_loss
        assert second.results[key].steps == expected.results[key].steps
        if second.steps[key]:  # the resumed run only trains the steps after its checkpoint
            assert second.steps[key][0].step == through + 1


def uninterrupted(config: JobConfig) -> MemorySink:
    sink = MemorySink()
    Experiment(config).run_all(sink)
    return sink


PLATEAU = OptimizerConfig(
    "plateau", "sgd", "SGD", {"lr": 0.1}, schedule={"name": "plateau", "factor": 0.5, "patience": 0}
)
COSINE = OptimizerConfig("cosine", "adam", "Adam", {"lr": 0.01}, schedule={"name": "cosine"})


@pytest.mark.parametrize("crash_after", [30, 45], ids=["mid-epoch", "after-an-epoch-end"])
def test_fused_group_resumes_to_the_same_series(crash_after: int) -> None:
    # digits train split: 1,078 samples, batch 64: 17 steps per epoch; flushes every 5 steps
    # and at epoch ends, a checkpoint every 10 steps (at the next flush) and at epoch ends.
    config = with_checkpoints(
        dataclasses.replace(
            job(
                [LECTURE[1], LECTURE[6], LECTURE[7], COSINE], seeds=(0, 1), epochs=3, flush_every=5
            ),
            fuse="always",
        ),
        every=10,
    )
    expected = uninterrupted(config)
    first, second, store = interrupted(config, crash_after)
    assert all(result.fused for result in second.results.values())
    assert_same(expected, first, second, store)


def test_alone_runs_resume_with_dropout_plateau_and_full_batch_gd() -> None:
    model = ModelConfig("mlp", {"hidden": [32], "dropout": 0.3})
    config = with_checkpoints(
        job([LECTURE[0], LECTURE[7], PLATEAU], epochs=3, flush_every=4, model=model), every=6
    )
    expected = uninterrupted(config)
    first, second, store = interrupted(config, crash_after=40)
    assert not any(result.fused for result in second.results.values())
    assert_same(expected, first, second, store)


def test_batch_norm_statistics_resume_in_a_fused_group() -> None:
    model = ModelConfig("mlp", {"hidden": [16], "norm": "batch"})
    config = with_checkpoints(
        dataclasses.replace(job(LECTURE[4:], epochs=3, flush_every=3, model=model), fuse="always"),
        every=9,
    )
    expected = uninterrupted(config)
    first, second, store = interrupted(config, crash_after=20)
    assert_same(expected, first, second, store)


def test_a_checkpoint_of_another_layout_is_not_resumed() -> None:
    """A fused member's optimizer state is one flat tensor; trained alone the run needs one
    per parameter, so it starts again instead."""
    config = with_checkpoints(
        dataclasses.replace(job(LECTURE[1:4], epochs=2), fuse="always"), every=5
    )
    store = Checkpoints(crash_after=10)
    with pytest.raises(Crash):
        Experiment(config).run_all(store)
    fused_states = store.states()
    assert {state.layout for state in fused_states.values()} == {"fused"}
    alone = Experiment(dataclasses.replace(config, fuse="never"))
    assert alone.resumable(fused_states) == {}
    # a group must resume from one step: members with different steps start again
    experiment = Experiment(config)
    key = next(iter(fused_states))
    fused_states[key] = dataclasses.replace(fused_states[key], step=fused_states[key].step - 5)
    assert experiment.resumable(fused_states) == {}


def test_no_checkpoint_is_taken_unless_asked_for_nor_after_the_last_epoch() -> None:
    store = Checkpoints()
    Experiment(job(LECTURE[1:3], epochs=2)).run_all(store)
    assert store.saved == {}
    config = with_checkpoints(job(LECTURE[1:3], epochs=2, flush_every=100), every=1000)
    store = Checkpoints()
    Experiment(config).run_all(store)
    # epoch 1's end only: none mid-epoch (1000 steps), none after the last epoch
    assert set(store.steps.values()) == {17}


def test_landscape_points_resume_to_the_same_trajectory() -> None:
    # One step per epoch, so a flush and a checkpoint at every epoch's end (the clock takes
    # one at each epoch end); the crash comes at the flush after step 25.
    rosenbrock = DatasetConfig("rosenbrock", {"start": [-1.5, 2.0]})
    slow = [
        OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.0005}),
        OptimizerConfig("adam", "adam", "Adam", {"lr": 0.05}),
        dataclasses.replace(PLATEAU, hyperparameters={"lr": 0.001}),
    ]
    config = with_checkpoints(
        dataclasses.replace(job(slow, epochs=40), dataset=rosenbrock), every=10
    )
    expected = uninterrupted(config)
    assert not any(result.diverged for result in expected.results.values())
    first, second, store = interrupted(config, crash_after=25)
    assert set(store.steps.values()) == {25}
    assert_same(expected, first, second, store)
    for key in expected.steps:
        series = joined(first, second, key, store.steps[key])
        assert [(r.x, r.y) for r in series] == [(r.x, r.y) for r in expected.steps[key]]
