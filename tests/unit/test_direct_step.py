"""``Update.step`` calls torch.optim's update rules directly: the same numbers as
``optimizer.step()``, step hooks still honoured, schedules still see their optimizer step."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from workers.engine import optimizers, schedules, step
from workers.engine.config import OptimizerConfig
from workers.engine.step import Update, direct_step

CLASSES: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "Adam": {"lr": 0.01, "betas": [0.8, 0.99]},
    "AdamW": {"lr": 0.01, "weight_decay": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.5},
    "Adagrad": {"lr": 0.05},
    "Adadelta": {"lr": 1.0},
    "NAdam": {"lr": 0.01},
    "Rprop": {"lr": 0.01},
}


def _update(torch_class: str, hyperparameters: dict[str, Any], schedule: bool) -> Update:
    generator = torch.Generator().manual_seed(0)
    parameter = torch.randn(50, dtype=torch.float64, generator=generator).requires_grad_(True)
    config = OptimizerConfig("x", "x", torch_class, hyperparameters)
    optimizer = optimizers.build(config, [parameter])
    spec = {"name": "step", "step_size": 2, "gamma": 0.5} if schedule else None
    return Update(optimizer, schedules.build(spec, optimizer, 10))


def _train(update: Update, direct: bool) -> torch.Tensor:
    (parameter,) = update.optimizer.param_groups[0]["params"]
    before, step.DIRECT_STEP = step.DIRECT_STEP, direct
    try:
        for _ in range(6):
            parameter.grad = torch.sin(parameter.detach() * 3) + parameter.detach() ** 2
            update.step()
    finally:
        step.DIRECT_STEP = before
    return parameter.detach().clone()


@pytest.mark.parametrize("torch_class", sorted(CLASSES))
def test_direct_step_is_the_optimizers_own_step(torch_class: str) -> None:
    hyperparameters = CLASSES[torch_class]
    direct, wrapped = (_update(torch_class, hyperparameters, True) for _ in range(2))
    assert direct._direct is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        assert torch.equal(_train(direct, True), _train(wrapped, False))
    assert direct.lr == wrapped.lr == pytest.approx(hyperparameters["lr"] * 0.5**3)
    assert str(direct.optimizer.state_dict()) == str(wrapped.optimizer.state_dict())


def test_a_registered_step_hook_makes_the_ordinary_call() -> None:
    update = _update("SGD", {"lr": 0.1}, False)
    calls: list[str] = []
    handle = update.optimizer.register_step_post_hook(lambda *_: calls.append("own"))
    global_handle = register_optimizer_step_pre_hook(lambda *_: calls.append("global"))
    try:
        _train(update, True)
    finally:
        handle.remove()
        global_handle.remove()
    assert calls == ["global", "own"] * 6


def test_only_torch_optims_own_classes_are_called_directly() -> None:
    parameter = torch.zeros(3, requires_grad=True)

    class Plugin(torch.optim.SGD):  # a subclass defined elsewhere: its step may be anything
        pass

    assert direct_step(Plugin([parameter], lr=0.1)) is None
    assert direct_step(torch.optim.LBFGS([parameter])) is None  # a closure, several losses
    assert direct_step(torch.optim.SGD([parameter], lr=0.1, differentiable=True)) is None
    assert direct_step(torch.optim.SGD([parameter], lr=0.1)) is not None
