"""Parameter groups of an optimizer entry (services/spec/groups.py): the torch-free parameter
names and roles agree with the real modules; every parameter lands in exactly one group;
Muon on the hidden matrices with AdamW on the rest trains as a hand-written two-optimizer
loop does (float64, every stored field, alone and fused); ``no_decay`` is a two-group AdamW;
a grouping that does not fit the model is a 422 naming the groups and parameters."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from services.spec import JobSpec, field_errors
from services.spec.groups import model_parameters
from services.spec.models import MODEL_MODELS
from services.spec.optimizers import ENTRY_MODELS
from tests.unit.test_engine import job
from tests.unit.test_fusion import image_folder  # noqa: F401  (the fixture)
from tests.unit.test_paths_agree import assert_same, train
from workers.adapter import parameter_groups
from workers.engine import (
    DatasetConfig,
    Experiment,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
)
from workers.engine.models import build as build_model
from workers.engine.optimizers import GroupedOptimizer
from workers.sinks.memory import MemorySink

MODELS: list[tuple[dict[str, Any], tuple[int, ...]]] = [
    ({"name": "linear"}, (64,)),
    ({"name": "mlp"}, (64,)),
    ({"name": "mlp", "hidden": [32, 16, 8]}, (64,)),
    ({"name": "mlp", "hidden": [16, 16], "norm": "batch", "dropout": 0.1}, (64,)),
    ({"name": "mlp", "hidden": [16, 16], "norm": "layer"}, (64,)),
    ({"name": "cnn"}, (1, 28, 28)),
    ({"name": "cnn", "activation": "tanh"}, (3, 32, 32)),
    ({"name": "resnet"}, (3, 32, 32)),
    ({"name": "resnet", "width": 8, "blocks": 2}, (3, 32, 32)),
]
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
MUON_ADAMW: dict[str, Any] = {
    "label": "muon+adamw",
    "name": "adamw",
    "lr": 0.003,
    "weight_decay": 0.01,
    "groups": [{"params": "matrix", "name": "muon", "lr": 0.02}],
}


def spec_model(model: dict[str, Any]) -> Any:
    return MODEL_MODELS[model["name"]].model_validate(model)


def real_module(model: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    params = {k: v for k, v in spec_model(model).model_dump().items() if k != "name"}
    return build_model(ModelConfig(model["name"], params), shape, 10)


def expected_role(module: nn.Module, name: str, weights: list[str]) -> str:
    owner = module.get_submodule(name.rpartition(".")[0])
    if isinstance(owner, NORMS):
        return "norm"
    if name.endswith("bias"):
        return "bias"
    if name == weights[-1]:
        return "output"
    return "input" if name == weights[0] else "matrix"


@pytest.mark.parametrize(("model", "shape"), MODELS, ids=lambda m: str(m))
def test_spec_names_and_roles_are_the_real_modules(
    model: dict[str, Any], shape: tuple[int, ...]
) -> None:
    module = real_module(model, shape)
    real = dict(module.named_parameters())
    derived = model_parameters(spec_model(model))
    assert [p.name for p in derived] == list(real)  # names, in named_parameters() order
    assert [p.ndim for p in derived] == [t.ndim for t in real.values()]
    weights = [
        n
        for n in real
        if n.endswith("weight") and not isinstance(module.get_submodule(n[:-7]), NORMS)
    ]
    assert [p.role for p in derived] == [expected_role(module, n, weights) for n in real]


def resolved(entry: dict[str, Any], model: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    validated = ENTRY_MODELS[entry["name"]].model_validate(entry)
    parameters = model_parameters(spec_model(model))
    groups = parameter_groups(validated.name, validated.hyperparameters(), parameters)
    return [(g.name, g.parameters) for g in groups]


@pytest.mark.parametrize(
    ("model", "muon"),
    [
        ({"name": "mlp", "hidden": [32, 16]}, ["3.weight"]),
        ({"name": "cnn"}, ["0.3.weight", "1.weight", "3.weight"]),
        ({"name": "resnet"}, None),  # every matrix; the convolutions' are 4-D
    ],
)
def test_every_parameter_is_in_exactly_one_group(
    model: dict[str, Any], muon: list[str] | None
) -> None:
    entry = {
        "name": "adamw",
        "no_decay": ["bias", "norm"],
        "groups": [{"params": "matrix", "name": "sgd", "lr": 0.1}, {"params": "input"}],
    }
    groups = resolved(entry, model)
    names = [n for _, members in groups for n in members]
    everything = [p.name for p in model_parameters(spec_model(model))]
    assert sorted(names) == sorted(everything) and len(set(names)) == len(names)
    parameters = {p.name: p for p in model_parameters(spec_model(model))}
    assert all(parameters[n].role == "matrix" for n in groups[0][1])
    if muon is not None:
        assert list(groups[0][1]) == muon
    no_decay = [members for name, members in groups if name == "adamw"][-1]
    assert {parameters[n].role for n in no_decay} <= {"bias", "norm"}


def test_roles_names_and_rest_select_what_they_say() -> None:
    model = {"name": "mlp", "hidden": [8, 8], "norm": "layer"}
    entry = {
        "name": "adam",
        "groups": [
            {"params": ["output", "5.*"], "name": "sgd"},
            {"params": "bias", "name": "rmsprop"},
            {"params": "rest", "name": "adagrad"},
        ],
    }
    assert resolved(entry, model) == [
        ("sgd", ("5.weight", "5.bias", "7.weight")),
        ("rmsprop", ("1.bias", "4.bias", "7.bias")),
        ("adagrad", ("1.weight", "2.weight", "2.bias", "4.weight")),
    ]


# --- training: the engine against plain torch -------------------------------------------


def experiment(optimizer: OptimizerConfig, model: dict[str, Any], fuse: str) -> JobConfig:
    params = {k: v for k, v in spec_model(model).model_dump().items() if k != "name"}
    config = job([optimizer], epochs=2, model=ModelConfig(model["name"], params))
    return dataclasses.replace(config, dtype="float64", fuse=fuse)


def grouped(entry: dict[str, Any], model: dict[str, Any]) -> OptimizerConfig:
    validated = ENTRY_MODELS[entry["name"]].model_validate(entry)
    stored = validated.hyperparameters()
    groups = parameter_groups(validated.name, stored, model_parameters(spec_model(model)))
    own = {k: v for k, v in stored.items() if k not in ("groups", "no_decay")}
    return OptimizerConfig(
        validated.display_label, validated.name, validated.info.torch_class, own, groups=groups
    )


@dataclasses.dataclass
class Hand:
    """What a hand-written loop records, field by field as the engine stores it."""

    steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    result: dict[str, float]


def by_hand(
    config: JobConfig, optimizers: Callable[[nn.Module], list[torch.optim.Optimizer]]
) -> Hand:
    """The run trained by a plain torch loop over the engine's data and batch order: the
    same records the engine stores (step loss, accuracy, lr, gradient norm; epoch train and
    validation scores; the test scores)."""
    exp = Experiment(config)
    problem, data = exp.problem, exp.data
    model = copy.deepcopy(exp.initial_model(0))
    steps = optimizers(model)
    records: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(x)
        model.train()
        return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())

    step = 0
    for epoch, parts in problem.batches(0, False):  # type: ignore[union-attr]
        loss_sum = score_sum = samples = 0.0
        for index in parts:
            x, y = data.x_train[index], data.y_train[index]
            for p in model.parameters():
                p.grad = None
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            accuracy = float((out.argmax(1) == y).double().mean())
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            lr = float(steps[0].param_groups[0]["lr"])
            for optimizer in steps:
                optimizer.step()
            step += 1
            records.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "accuracy": accuracy,
                    "lr": lr,
                    "grad_norm": norm,
                }
            )
            loss_sum += float(loss.detach()) * len(y)
            score_sum += accuracy * len(y)
            samples += len(y)
        val = evaluate(data.x_val, data.y_val)
        epochs.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": loss_sum / samples,
                "train_accuracy": score_sum / samples,
                "val_loss": val[0],
                "val_accuracy": val[1],
            }
        )
    test = evaluate(data.x_test, data.y_test)
    return Hand(records, epochs, {"test_loss": test[0], "test_accuracy": test[1]})


def assert_agree(engine: MemorySink, hand: Hand, tolerance: float = 1e-6) -> None:
    """Every field the hand loop records equals the engine's stored one (run 0)."""
    pairs = [
        *zip(engine.steps[0], hand.steps, strict=True),
        *zip(engine.epochs[0], hand.epochs, strict=True),
        (engine.results[0], hand.result),
    ]
    assert len(engine.steps[0]) > 0 and len(engine.epochs[0]) == len(hand.epochs) > 0
    for stored, expected in pairs:
        for field, value in expected.items():
            got = getattr(stored, field)
            assert math.isclose(got, value, rel_tol=tolerance, abs_tol=1e-9), (
                f"{type(stored).__name__} {field}: {got} vs {value}"
            )


def muon_and_adamw(model: nn.Module) -> list[torch.optim.Optimizer]:
    """Muon on the hidden matrices, AdamW on everything else: two plain torch optimizers."""
    named = list(model.named_parameters())
    matrices = [p for name, p in named if name == "3.weight"]
    rest = [p for name, p in named if name != "3.weight"]
    return [
        torch.optim.Muon(matrices, lr=0.02),
        torch.optim.AdamW(rest, lr=0.003, weight_decay=0.01),
    ]


MLP = {"name": "mlp", "hidden": [32, 32]}


@pytest.mark.parametrize("fuse", ["never", "always"], ids=["alone", "fused"])
def test_muon_with_adamw_trains_as_two_torch_optimizers_do(fuse: str) -> None:
    optimizer = grouped(MUON_ADAMW, MLP)
    assert optimizer.torch_classes == ("Muon", "AdamW")
    config = experiment(optimizer, MLP, fuse)
    if fuse == "always":  # a fused group needs two members: a second seed beside it
        config = dataclasses.replace(
            config,
            runs=(config.runs[0], dataclasses.replace(config.runs[0], key=1, seed=1)),
        )
    engine = train(config)
    assert engine.results[0].fused == (fuse == "always"), engine.results[0].fusion
    assert_agree(engine, by_hand(config, muon_and_adamw))
    assert engine.steps[0][-1].loss < engine.steps[0][0].loss * 0.5  # it learnt something


def test_no_decay_is_a_two_group_adamw() -> None:
    entry = {"name": "adamw", "lr": 0.01, "weight_decay": 0.3, "no_decay": ["bias", "norm"]}
    model = {"name": "mlp", "hidden": [16], "norm": "layer"}
    config = experiment(grouped(entry, model), model, "never")

    def two_groups(module: nn.Module) -> list[torch.optim.Optimizer]:
        named = list(module.named_parameters())
        off = [p for n, p in named if n.endswith("bias") or n.startswith("2.")]  # 2: the norm
        on = [p for n, p in named if not (n.endswith("bias") or n.startswith("2."))]
        groups = [{"params": on}, {"params": off, "weight_decay": 0.0}]
        return [torch.optim.AdamW(groups, lr=0.01, weight_decay=0.3)]

    assert_agree(train(config), by_hand(config, two_groups))


def test_grouped_entries_store_the_same_fused_and_alone(image_folder: Path) -> None:  # noqa: F811
    entries = [
        MUON_ADAMW | {"no_decay": ["bias"]},
        {"name": "nag", "lr": 0.05, "groups": [{"params": "output", "lr": 0.01}]},
        {"name": "adam", "no_decay": "bias", "groups": [{"params": "matrix", "name": "rmsprop"}]},
    ]
    model = {"name": "mlp", "hidden": [16, 16]}
    optimizers = [grouped(e, model) for e in entries]
    config = job(optimizers, seeds=(0, 1), epochs=2, model=ModelConfig("mlp", {"hidden": [16, 16]}))
    config = dataclasses.replace(config, dtype="float64", eval_every_steps=5)
    fused = train(dataclasses.replace(config, fuse="always"))
    alone = train(dataclasses.replace(config, fuse="never"))
    assert all(result.fused for result in fused.results.values())
    assert_same(fused, alone)
    # LeNet: Muon on its linear layers (2-D) by name, AdamW on the rest (convolutions too).
    lenet = {
        "name": "adamw",
        "lr": 0.003,
        "groups": [{"params": ["1.weight", "3.weight"], "name": "muon", "lr": 0.02}],
    }
    images = DatasetConfig("mnist", {"folder": str(image_folder)})
    config = job(
        [grouped(lenet, {"name": "cnn"})], seeds=(0, 1), epochs=1, model=ModelConfig("cnn", {})
    )
    config = dataclasses.replace(config, dataset=images, batch_size=32, dtype="float64")
    fused = train(dataclasses.replace(config, fuse="always"))
    alone = train(dataclasses.replace(config, fuse="never"))
    assert all(result.fused for result in fused.results.values())
    assert_same(fused, alone)


def test_a_schedule_sets_every_groups_rate_and_the_first_groups_is_recorded() -> None:
    entry = MUON_ADAMW | {"schedule": {"name": "exponential", "gamma": 0.9}}
    optimizer = dataclasses.replace(
        grouped(entry, MLP), schedule={"name": "exponential", "gamma": 0.9}
    )
    sink = train(experiment(optimizer, MLP, "never"))
    lrs = [step.lr for step in sink.steps[0][:3]]
    assert lrs == pytest.approx([0.02, 0.018, 0.0162])  # Muon's, groups[0]


def test_a_schedule_scales_each_groups_own_rate() -> None:
    matrix, bias = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    grouped = GroupedOptimizer(
        [torch.optim.Muon([matrix], lr=0.02), torch.optim.AdamW([bias], lr=0.003)]
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(grouped, gamma=0.5)
    for _ in range(2):
        matrix.grad, bias.grad = torch.ones(2, 2), torch.ones(2)
        grouped.step()
        scheduler.step()
    muon, adamw = grouped.optimizers
    assert muon.param_groups[0]["lr"] == pytest.approx(0.005)
    assert adamw.param_groups[0]["lr"] == pytest.approx(0.00075)
    assert grouped.defaults == {}  # two classes: a one-cycle schedule cycles no momentum


def test_a_grouped_optimizer_resumes_from_its_state() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).double()

    def build(module: nn.Module) -> GroupedOptimizer:
        return GroupedOptimizer(
            [
                torch.optim.Muon([module[0].weight], lr=0.02),  # type: ignore[index]
                torch.optim.AdamW([p for n, p in module.named_parameters() if n != "0.weight"]),
            ]
        )

    def step(module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        module.zero_grad()
        module(torch.ones(3, 4, dtype=torch.float64)).square().sum().backward()
        optimizer.step()

    straight, first = model, build(model)
    copied = copy.deepcopy(model)
    for _ in range(2):
        step(straight, first)
    saved = first.state_dict()
    again = copy.deepcopy(straight)
    resumed = build(again)
    resumed.load_state_dict(copy.deepcopy(saved))
    step(straight, first)
    step(again, resumed)
    for a, b in zip(straight.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(copied.parameters()), next(straight.parameters()))


# --- the spec: what a job may write, and the 422s ---------------------------------------


def errors_of(optimizer: dict[str, Any], model: dict[str, Any] | None = None) -> list[str]:
    spec = {
        "dataset": {"name": "mnist" if model and model["name"] != "mlp" else "digits"},
        "model": model or {"name": "mlp", "hidden": [32, 32]},
        "optimizers": [{"name": "adam"}, optimizer],
    }
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    return [str(error) for error in field_errors(caught.value.errors())]


def test_muon_is_accepted_in_a_group_and_refused_alone_with_the_reason() -> None:
    spec = {
        "dataset": {"name": "digits"},
        "model": MLP,
        "optimizers": [MUON_ADAMW],
    }
    stored = JobSpec.model_validate(spec).optimizers[0].hyperparameters()
    assert stored["groups"][0]["name"] == "muon" and stored["groups"][0]["lr"] == 0.02
    assert stored["groups"][0]["momentum"] == 0.95  # Muon's default, not AdamW's values
    [message] = errors_of({"name": "Muon", "lr": 0.02})
    assert message.startswith("optimizers[1].name: Muon updates 2-D weight matrices only")
    assert "1.bias (bias, 1-D)" in message and '"params": "matrix", "name": "muon"' in message
    [message] = errors_of(MUON_ADAMW, {"name": "cnn"})  # conv matrices are 4-D
    assert message.startswith("optimizers[1].groups[0]: Muon updates 2-D weight matrices")
    assert "0.3.weight (matrix, 4-D)" in message


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "sgd"}, {"params": "3.*"}]},
            "optimizers[1].groups[1]: params '3.*' selects 3.weight, which groups[0] selected "
            "already; every parameter belongs to exactly one group; the model's parameters: "
            "1.weight (input, 2-D), 1.bias (bias, 1-D), 3.weight (matrix, 2-D), 3.bias (bias, "
            "1-D), 5.weight (output, 2-D), 5.bias (bias, 1-D)",
        ),
        (
            {"name": "adamw", "groups": [{"params": "norm", "weight_decay": 0}]},
            "optimizers[1].groups[0]: params 'norm' selects no parameter; the model's "
            "parameters: 1.weight (input, 2-D)",
        ),
        (
            {"name": "adamw", "groups": [{"params": "rest", "name": "sgd"}, {"params": "bias"}]},
            "optimizers[1].groups[0].params: 'rest' takes every parameter no earlier group",
        ),
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "adamm"}]},
            "optimizers[1].groups[0].name: 'adamm' is an unknown optimizer name; allowed in a "
            "group (case-insensitive): sgd, momentum",
        ),
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "muon", "lr": 0}]},
            "optimizers[1].groups[0].lr: Input should be greater than 0",
        ),
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "muon", "betas": [0, 0]}]},
            "optimizers[1].groups[0]: unknown key 'betas'; allowed keys: params, name, no_decay "
            "and muon's hyperparameters: lr, weight_decay, momentum",
        ),
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "lbfgs"}]},
            "optimizers[1].groups[0].name: lbfgs cannot train a group",
        ),
        (
            {"name": "adamw", "groups": [{"params": "matrix", "name": "gd"}]},
            "optimizers[1].groups[0].name: gd cannot train a group: its full-batch schedule",
        ),
        ({"name": "rprop", "no_decay": "bias"}, "optimizers[1].no_decay: rprop has no"),
        ({"name": "lbfgs", "no_decay": "bias"}, "optimizers[1].groups: LBFGS takes one"),
        (
            {"name": "adamw", "no_decay": "bias", "groups": [{"params": "rest", "name": "sgd"}]},
            "optimizers[1].no_decay: the entry's own optimizer trains no parameter here",
        ),
    ],
)
def test_groupings_that_do_not_fit_say_what_to_change(
    optimizer: dict[str, Any], expected: str
) -> None:
    [message] = errors_of(optimizer)
    assert message.startswith(expected), message


def test_a_landscape_has_no_groups() -> None:
    spec = {
        "dataset": {"name": "rosenbrock"},
        "model": {"name": "point"},
        "optimizers": [{"name": "adam", "no_decay": "bias"}],
    }
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    assert "parameter groups need a model" in str(caught.value)


def test_the_catalog_lists_each_models_parameters_and_roles() -> None:
    from services.catalog import catalog

    models = {m["name"]: m for m in catalog()["models"]}
    assert models["mlp"]["named_parameters"][0] == {"name": "1.weight", "role": "input", "ndim": 2}
    assert [p["role"] for p in models["linear"]["named_parameters"]] == ["output", "bias"]
    assert models["point"]["named_parameters"] == []
    assert {"matrix", "bias", "norm", "input", "output", "rest"} == set(
        catalog()["parameter_groups"]["roles"]
    )


def test_a_study_searches_a_groups_hyperparameter() -> None:
    from services.db.models import Run
    from services.study.phases import _setting, sampled_values

    spec = {
        "dataset": {"name": "digits", "val_fraction": 0.2},
        "model": MLP,
        "optimizers": [MUON_ADAMW | {"search": {"groups.0.lr": {"log_uniform": [1e-3, 0.1]}}}],
        "tuning": {"trials": 4},
    }
    entry = JobSpec.model_validate(spec).optimizers[0]
    stored = _setting(entry, {"groups.0.lr": 0.05})
    assert stored["groups"][0]["lr"] == 0.05 and stored["lr"] == 0.003  # the group's, only
    assert sampled_values(Run(hyperparameters=stored), entry) == {"groups.0.lr": 0.05}
    spec["optimizers"][0]["search"] = {"groups.0.lr": {"log_uniform": [1e-3, 1e7]}}
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    [message] = [str(e) for e in field_errors(caught.value.errors())]
    assert message == (
        "optimizers[0].search.groups.0.lr: 10000000.0 is outside what groups.0.lr accepts "
        "(allowed: 0 < groups.0.lr <= 1e+06)"
    )


def test_a_stored_grouped_job_trains_through_the_worker_path(embedded_home: Path) -> None:
    from services.db import store
    from services.db.models import StepMetric
    from services.db.session import unit_of_work
    from workers.execution import execute_job

    plain = {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}
    spec = {
        "dataset": {"name": "digits"},
        "model": MLP,
        "optimizers": [MUON_ADAMW | {"no_decay": ["bias"]}, plain],
        "epochs": 1,
        "execution": {"dtype": "float64"},
    }
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(spec)).id)
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        runs = {run.label: run for run in job.runs}
        grouped = runs["muon+adamw"]
        assert grouped.status == "succeeded" and grouped.fused, grouped.fusion
        assert grouped.hyperparameters["groups"][0] == {
            "params": "matrix",
            "name": "muon",
            "lr": 0.02,
            "weight_decay": 0.1,
            "momentum": 0.95,
            "nesterov": True,
            "ns_coefficients": [3.4445, -4.775, 2.0315],
            "eps": 1e-07,
            "ns_steps": 5,
            "adjust_lr_fn": None,
        }
        assert grouped.hyperparameters["no_decay"] == ["bias"]
        losses = {
            label: [
                row.loss
                for row in sorted(
                    session.query(StepMetric).filter(StepMetric.run_id == run.id),
                    key=lambda row: row.step,
                )
            ]
            for label, run in runs.items()
        }
    # The same start and batches: the first loss is AdamW's; then Muon's steps differ.
    assert losses["muon+adamw"][0] == pytest.approx(losses["adamw"][0], rel=1e-12)
    assert losses["muon+adamw"][-1] != pytest.approx(losses["adamw"][-1], rel=1e-3)
