"""The training engine on tiny problems, on the CPU."""

from __future__ import annotations

import math

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
from workers.sinks.memory import MemorySink

LECTURE = [
    OptimizerConfig("gd", "gd", "SGD", {"lr": 0.5}, full_batch=True),
    OptimizerConfig("sgd", "sgd", "SGD", {"lr": 0.05}),
    OptimizerConfig("momentum", "momentum", "SGD", {"lr": 0.05, "momentum": 0.9}),
    OptimizerConfig("nag", "nag", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    OptimizerConfig("adagrad", "adagrad", "Adagrad", {"lr": 0.05}),
    OptimizerConfig("rmsprop", "rmsprop", "RMSprop", {"lr": 0.001}),
    OptimizerConfig("adadelta", "adadelta", "Adadelta", {"lr": 1.0}),
    OptimizerConfig("adam", "adam", "Adam", {"lr": 0.001}),
]


def job(
    optimizers: list[OptimizerConfig],
    *,
    seeds: tuple[int, ...] = (0,),
    epochs: int = 3,
    flush_every: int = 7,
    model: ModelConfig | None = None,
) -> JobConfig:
    runs = tuple(
        RunConfig(key=index, optimizer=optimizer, seed=seed)
        for index, (seed, optimizer) in enumerate((s, o) for s in seeds for o in optimizers)
    )
    return JobConfig(
        dataset=DatasetConfig("digits"),
        model=model or ModelConfig("mlp", {"hidden": [32]}),
        runs=runs,
        epochs=epochs,
        batch_size=64,
        flush_every=flush_every,
    )


@pytest.fixture(scope="module")
def lecture_run() -> tuple[JobConfig, MemorySink, Experiment]:
    config = job(LECTURE)
    sink = MemorySink()
    experiment = Experiment(config)
    experiment.run_all(sink)
    return config, sink, experiment


def test_mini_batch_runs_share_initial_weights_and_first_batch(lecture_run) -> None:  # type: ignore[no-untyped-def]
    _, sink, _ = lecture_run
    first_losses = {sink.steps[key][0].loss for key in range(1, 8)}
    assert len(first_losses) == 1  # identical weights and identical first batch
    # Plain SGD and momentum take the same first step (the momentum buffer starts as the
    # gradient), so on the shared second batch they still agree exactly; Adam does not.
    assert sink.steps[1][1].loss == sink.steps[2][1].loss
    assert sink.steps[1][1].loss != sink.steps[7][1].loss


def test_gd_takes_one_full_batch_step_per_epoch_from_the_same_weights(lecture_run) -> None:  # type: ignore[no-untyped-def]
    _, sink, experiment = lecture_run
    gd = sink.steps[0]
    assert [s.step for s in gd] == [1, 2, 3] and [s.epoch for s in gd] == [1, 2, 3]
    assert all(s.samples == experiment.n_train for s in gd)
    # Its first loss is the full-split loss of the shared initial weights.
    model = experiment.initial_model(0)
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(
            model(experiment.data.x_train), experiment.data.y_train
        )
    assert gd[0].loss == pytest.approx(full.item(), rel=1e-6)


def test_steps_are_numbered_globally_and_flushed_in_batches(lecture_run) -> None:  # type: ignore[no-untyped-def]
    config, sink, experiment = lecture_run
    per_epoch = math.ceil(experiment.n_train / config.batch_size)
    for key in range(1, 8):
        steps = sink.steps[key]
        assert [s.step for s in steps] == list(range(1, 3 * per_epoch + 1))
        assert [s.epoch for s in steps][per_epoch - 1 : per_epoch + 1] == [1, 2]
        assert sink.planned[key] == 3 * per_epoch
        # flush_every=7 plus one flush at each epoch end: never one call per step
        assert sink.flushes[key] == 3 * math.ceil(per_epoch / 7)
        seconds = [s.train_seconds for s in steps]
        assert seconds == sorted(seconds) and seconds[0] > 0
    assert sink.total_steps == 3 + 7 * 3 * per_epoch


def test_records_carry_lr_grad_norm_and_epoch_metrics(lecture_run) -> None:  # type: ignore[no-untyped-def]
    _, sink, _ = lecture_run
    assert {s.lr for s in sink.steps[6]} == {1.0}  # adadelta
    assert all(s.grad_norm > 0 and 0 <= s.accuracy <= 1 for s in sink.steps[7])
    epochs = sink.epochs[7]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert epochs[-1].step == sink.steps[7][-1].step
    assert all(0 <= e.val_accuracy <= 1 and e.val_loss > 0 for e in epochs)


def test_losses_fall_on_digits(lecture_run) -> None:  # type: ignore[no-untyped-def]
    _, sink, _ = lecture_run
    for key, optimizer in enumerate(LECTURE):
        epochs = sink.epochs[key]
        assert epochs[-1].train_loss < epochs[0].train_loss, optimizer.label
        assert epochs[-1].val_loss < sink.steps[key][0].loss, optimizer.label
    assert max(sink.epochs[key][-1].val_accuracy for key in range(8)) > 0.9


def test_runs_are_reproducible_and_seeds_change_init_and_order() -> None:
    config = job(LECTURE[1:2], seeds=(0, 1), epochs=1)
    first, second = MemorySink(), MemorySink()
    Experiment(config).run_all(first)
    Experiment(config).run_all(second)
    assert [s.loss for s in first.steps[0]] == [s.loss for s in second.steps[0]]
    assert first.steps[0][0].loss != first.steps[1][0].loss


def test_a_diverging_run_stops_and_keeps_only_finite_steps() -> None:
    config = job([OptimizerConfig("sgd", "sgd", "SGD", {"lr": 100.0})], epochs=3, flush_every=5)
    sink = MemorySink()
    Experiment(config).run_all(sink)
    result = sink.results[0]
    assert result.diverged
    assert result.steps == len(sink.steps[0]) < sink.planned[0]
    assert all(math.isfinite(s.loss) for s in sink.steps[0])


def test_lbfgs_steps_through_its_closure() -> None:
    lbfgs = OptimizerConfig(
        "lbfgs", "lbfgs", "LBFGS", {"lr": 1.0, "max_iter": 5, "line_search_fn": "strong_wolfe"}
    )
    config = job([lbfgs], epochs=1, model=ModelConfig("linear"))
    sink = MemorySink()
    Experiment(config).run_all(sink)
    assert not sink.results[0].diverged
    # One epoch of mini-batch LBFGS more than halves the loss. Its line search amplifies
    # rounding, so the margin is wide: on one machine it reached under a third of the first
    # loss, on another (same torch, another CPU) 0.40 of it.
    assert sink.epochs[0][-1].val_loss < sink.steps[0][0].loss / 2


def test_the_same_spec_gives_bit_identical_metrics_twice() -> None:
    def everything(sink: MemorySink) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for key in sorted(sink.steps):
            rows += [(key, s.step, s.loss, s.accuracy, s.lr, s.grad_norm) for s in sink.steps[key]]
            rows += [
                (key, e.epoch, e.train_loss, e.val_loss, e.val_accuracy) for e in sink.epochs[key]
            ]
        return rows

    config = job(LECTURE, seeds=(0, 1), epochs=2)
    first, second = MemorySink(), MemorySink()
    Experiment(config).run_all(first)
    Experiment(config).run_all(second)
    assert everything(first) == everything(second)  # exact equality, not approx
