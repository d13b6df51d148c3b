"""Fused groups compute what the runs compute one by one, and say when they cannot fuse."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from services.db import store
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, JobSpec
from tests.unit.test_datasets import IDX_FILES, write_idx
from tests.unit.test_engine import LECTURE, job
from workers.engine import DatasetConfig, Experiment, JobConfig, ModelConfig, OptimizerConfig
from workers.execution import execute_job
from workers.sinks.memory import MemorySink

MLP = ModelConfig("mlp", {"hidden": [32]})
CNN = ModelConfig("cnn", {})
RESNET = ModelConfig("resnet", {"width": 4})  # batch norm, residual blocks, pooling


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable MNIST-shaped set: each class a bright square somewhere, plus noise."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 3
        pixels = rng.integers(0, 60, size=(n, 28, 28))
        for index, label in enumerate(labels):
            pixels[index, 4 + 7 * label : 11 + 7 * label, 8:20] += 180
        return pixels.astype(np.uint8), labels.astype(np.uint8)

    (folder / "mnist").mkdir()
    train, test = images(150), images(30)
    for file, array in zip(IDX_FILES, (*train, *test), strict=True):
        write_idx(folder / "mnist" / file, array, gz=False)
    return folder


def config(model: ModelConfig, folder: Path, dtype: str, epochs: int = 2) -> JobConfig:
    base = job(LECTURE, epochs=epochs, model=model, flush_every=5)
    if model.name in ("cnn", "resnet"):
        base = dataclasses.replace(base, dataset=DatasetConfig("mnist", {"folder": str(folder)}))
    return dataclasses.replace(base, dtype=dtype, batch_size=32, fuse="always")


def train(config: JobConfig) -> tuple[MemorySink, Experiment]:
    sink, experiment = MemorySink(), Experiment(config)
    experiment.run_all(sink)
    return sink, experiment


def losses(sink: MemorySink, key: int, steps: int | None = None) -> torch.Tensor:
    return torch.tensor([r.loss for r in sink.steps[key][:steps]], dtype=torch.float64)


@pytest.mark.parametrize("model", [MLP, CNN, RESNET], ids=["mlp", "cnn", "resnet"])
def test_in_float64_fused_runs_equal_unfused_runs_at_every_step(
    model: ModelConfig, image_folder: Path
) -> None:
    fused_config = config(model, image_folder, "float64")
    fused, experiment = train(fused_config)
    alone, _ = train(dataclasses.replace(fused_config, fuse="never"))
    assert [g.fused for g in experiment.groups()] == [False, True]  # gd alone, 7 fused
    for run in fused_config.runs:
        assert len(fused.steps[run.key]) == len(alone.steps[run.key]) > 0
        assert torch.allclose(losses(fused, run.key), losses(alone, run.key), rtol=0, atol=1e-9)
        steps = zip(fused.steps[run.key], alone.steps[run.key], strict=True)
        assert all(abs(a.grad_norm - b.grad_norm) <= 1e-9 * max(1.0, b.grad_norm) for a, b in steps)
        epochs = zip(fused.epochs[run.key], alone.epochs[run.key], strict=True)
        assert all(abs(a.val_loss - b.val_loss) <= 1e-9 for a, b in epochs)
    assert fused.results[1].fused and fused.results[1].fusion == "fused with 6 other runs"
    assert not fused.results[0].fused and "full-batch" in (fused.results[0].fusion or "")
    assert alone.results[1].fusion == "fusion is turned off for this job"


@pytest.mark.parametrize("model", [MLP, CNN], ids=["mlp", "cnn"])
def test_in_float32_fused_runs_agree_early_and_in_final_accuracy(
    model: ModelConfig, image_folder: Path
) -> None:
    fused_config = config(model, image_folder, "float32", epochs=4)
    fused, _ = train(fused_config)
    alone, _ = train(dataclasses.replace(fused_config, fuse="never"))
    for run in fused_config.runs:
        first = losses(fused, run.key, 20), losses(alone, run.key, 20)
        assert torch.allclose(*first, rtol=0, atol=1e-5)
        final = fused.epochs[run.key][-1].val_accuracy, alone.epochs[run.key][-1].val_accuracy
        assert abs(final[0] - final[1]) <= 0.01  # type: ignore[operator]


@pytest.mark.parametrize(
    "model",
    [
        ModelConfig("mlp", {"hidden": [16, 16], "norm": "batch", "activation": "tanh"}),
        ModelConfig("mlp", {"hidden": [16], "norm": "layer"}),
    ],
    ids=["batch-norm", "layer-norm"],
)
def test_normalisation_layers_fuse_with_their_running_statistics(model: ModelConfig) -> None:
    """Batch norm's running statistics decide the evaluations: they must match too. (Batch
    statistics over K*C channels sum in another order than over C: ~1e-9 after two epochs.)"""
    fused_config = config(model, Path(), "float64")
    fused, _ = train(fused_config)
    alone, _ = train(dataclasses.replace(fused_config, fuse="never"))
    for run in fused_config.runs:
        assert torch.allclose(losses(fused, run.key), losses(alone, run.key), rtol=0, atol=1e-9)
        assert [e.val_loss for e in fused.epochs[run.key]] == pytest.approx(
            [e.val_loss for e in alone.epochs[run.key]], abs=1e-7
        )


def test_members_with_different_seeds_fuse_with_their_own_weights_and_batches() -> None:
    two_seeds = dataclasses.replace(job(LECTURE[1:4], seeds=(0, 1), epochs=2), dtype="float64")
    fused, experiment = train(two_seeds)
    alone, _ = train(dataclasses.replace(two_seeds, fuse="never"))
    assert [len(g.runs) for g in experiment.groups()] == [6]
    for run in two_seeds.runs:
        assert torch.allclose(losses(fused, run.key), losses(alone, run.key), rtol=0, atol=1e-9)
    assert losses(fused, 0)[0] != losses(fused, 3)[0]  # seed 1: other weights, other batch


def test_an_optimizer_with_a_per_tensor_rule_fuses_on_per_tensor_views() -> None:
    """Adafactor factors each weight matrix's second moments: it needs the tensors' shapes."""
    entries = [
        OptimizerConfig("adafactor", "adafactor", "Adafactor", {"lr": 0.01}),
        OptimizerConfig("adam", "adam", "Adam", {"lr": 0.001}),
    ]
    both = dataclasses.replace(job(entries, epochs=2), dtype="float64")
    fused, _ = train(both)
    alone, _ = train(dataclasses.replace(both, fuse="never"))
    assert fused.results[0].fused
    assert torch.allclose(losses(fused, 0), losses(alone, 0), rtol=0, atol=1e-9)


def test_what_cannot_fuse_trains_alone_and_says_why() -> None:
    lbfgs = OptimizerConfig("lbfgs", "lbfgs", "LBFGS", {"lr": 0.5})
    sink, experiment = train(job([*LECTURE[1:3], lbfgs], epochs=1))
    groups = experiment.groups()
    assert [(len(g.runs), g.fused) for g in groups] == [(2, True), (1, False)]
    assert sink.results[2].fusion == "LBFGS re-evaluates the loss through a closure"
    dropout = ModelConfig("mlp", {"hidden": [16], "dropout": 0.2})
    sink, experiment = train(job(LECTURE[1:3], epochs=1, model=dropout))
    assert not any(g.fused for g in experiment.groups())
    assert "dropout" in (sink.results[0].fusion or "")


def test_a_diverging_member_stops_alone_and_the_group_trains_on() -> None:
    wild = OptimizerConfig("wild", "sgd", "SGD", {"lr": 1e6})
    sink, _ = train(job([wild, *LECTURE[1:3]], epochs=3))
    total = sink.planned[1]
    assert sink.results[0].diverged and sink.results[0].steps < total
    assert len(sink.steps[0]) == sink.results[0].steps
    for key in (1, 2):
        assert not sink.results[key].diverged
        assert [r.step for r in sink.steps[key]] == list(range(1, total + 1))
        assert len(sink.epochs[key]) == 3 and sink.results[key].test_loss is not None


def test_a_stored_job_records_which_runs_trained_fused(embedded_home: Path) -> None:
    spec = JobSpec.model_validate({**LECTURE_SPEC, "epochs": 1})
    with unit_of_work() as session:
        job_id = store.create_job(session, spec).id
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:
        runs = {run.label: run for run in store.get_job(session, job_id).runs}
    assert runs["gd"].fused is False and "schedule" in (runs["gd"].fusion or "")
    assert runs["adam"].fused is True and runs["adam"].fusion == "fused with 6 other runs"


def test_on_a_cpu_fusion_leaves_out_groups_whose_activations_outgrow_the_caches(
    image_folder: Path,
) -> None:
    small = config(MLP, image_folder, "float32")
    lenet = dataclasses.replace(config(CNN, image_folder, "float32"), batch_size=128)
    assert [g.fused for g in Experiment(dataclasses.replace(small, fuse="auto")).groups()] == [
        False,
        True,
    ]
    groups = Experiment(dataclasses.replace(lenet, fuse="auto")).groups()
    assert not any(g.fused for g in groups)
    assert "MiB per step" in (groups[1].reason or "")


def test_each_member_keeps_its_own_schedule_and_mid_epoch_evaluations() -> None:
    entries = [
        dataclasses.replace(LECTURE[1], schedule={"name": "plateau", "factor": 0.5, "patience": 0}),
        dataclasses.replace(LECTURE[2], schedule={"name": "onecycle", "max_lr": 0.1}),
        dataclasses.replace(LECTURE[7], schedule={"name": "cosine", "eta_min": 0.0}),
    ]
    scheduled = dataclasses.replace(
        job(entries, epochs=3), dtype="float64", eval_every_steps=4, fuse="always"
    )
    fused, experiment = train(scheduled)
    alone, _ = train(dataclasses.replace(scheduled, fuse="never"))
    assert experiment.groups()[0].fused
    for run in scheduled.runs:
        assert [r.lr for r in fused.steps[run.key]] == [r.lr for r in alone.steps[run.key]]
        assert torch.allclose(losses(fused, run.key), losses(alone, run.key), rtol=0, atol=1e-9)
        evaluated = [(r.step, r.val_loss) for r in fused.steps[run.key] if r.val_loss is not None]
        expected = [(r.step, r.val_loss) for r in alone.steps[run.key] if r.val_loss is not None]
        assert [s for s, _ in evaluated] == [s for s, _ in expected] and evaluated
        assert [v for _, v in evaluated] == pytest.approx([v for _, v in expected], abs=1e-9)
    assert len({r.lr for r in fused.steps[2]}) > 3  # the cosine schedule did move
