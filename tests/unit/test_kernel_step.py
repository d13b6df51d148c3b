"""The direct kernel step (workers/engine/kernel_step.py) gives what ``optimizer.step()``
gives, bit for bit, parameters and state, across hyperparameters, a schedule and a reload:
the fused kernels (``fused=True``) and RMSprop's and Adadelta's single-tensor rules."""

from __future__ import annotations

import copy

import pytest
import torch

from workers.engine.kernel_step import kernel_step
from workers.engine.step import Update, direct_step

FUSED = [
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.5, "dampening": 0.3, "maximize": True}),
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.9), "weight_decay": 0.1, "amsgrad": True}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 1e-3, "eps": 1e-8}),
]
RULES = [
    (torch.optim.RMSprop, {"lr": 1e-2}),
    (torch.optim.RMSprop, {"lr": 1e-2, "alpha": 0.9, "centered": True, "weight_decay": 0.1}),
    (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.9, "eps": 1e-6, "maximize": True}),
    (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    (torch.optim.Adadelta, {"lr": 1.0}),
    (torch.optim.Adadelta, {"lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.1}),
    (torch.optim.Adadelta, {"lr": 1.0, "maximize": True}),
]
CASES = [(cls, {**options, "fused": True}) for cls, options in FUSED] + RULES


def _pair(cls: type, options: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return start.clone().requires_grad_(True), start.clone().requires_grad_(True)


def _grad(step: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(50, generator=torch.Generator().manual_seed(step + 1), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cls", "options"), CASES)
def test_the_kernel_step_equals_the_optimizers_own_step(
    cls: type, options: dict, dtype: torch.dtype
) -> None:
    plain_p, kernel_p = _pair(cls, options, dtype)
    plain = cls([plain_p], **options)
    direct = cls([kernel_p], **options)
    schedules = [
        torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (plain, direct)
    ]
    update = Update(direct, schedules[1])
    kernel = update._kernel
    assert kernel is not None
    stepped: list[bool] = []

    def counted() -> bool:
        stepped.append(kernel())
        return stepped[-1]

    update._kernel = counted
    for step in range(6):
        plain_p.grad, kernel_p.grad = _grad(step, dtype), _grad(step, dtype)
        plain.step()
        schedules[0].step()
        update.step()
        assert torch.equal(plain_p, kernel_p), step
    for name, value in plain.state[plain_p].items():
        assert torch.equal(value, direct.state[kernel_p][name]), name
    assert direct.param_groups[0]["lr"] == plain.param_groups[0]["lr"] < options["lr"]
    assert stepped[1:] == [True] * 5  # the kernel stepped from the second step on


@pytest.mark.parametrize(("cls", "options"), CASES)
def test_after_a_reload_the_kernel_steps_with_the_loaded_state(cls: type, options: dict) -> None:
    plain_p, kernel_p = _pair(cls, options, torch.float64)
    plain = cls([plain_p], **options)
    for step in range(2):
        plain_p.grad = _grad(step, torch.float64)
        plain.step()
    with torch.no_grad():
        kernel_p.copy_(plain_p)
    resumed = cls([kernel_p], **options)
    resumed.load_state_dict(copy.deepcopy(plain.state_dict()))  # as a checkpoint
    resumed.param_groups[0]["lr"] = plain.param_groups[0]["lr"] = options["lr"] / 3
    step_kernel = kernel_step(resumed)
    assert step_kernel is not None
    for step in range(2, 5):
        plain_p.grad, kernel_p.grad = _grad(step, torch.float64), _grad(step, torch.float64)
        plain.step()
        with torch.no_grad():
            assert step_kernel()  # the state exists: the kernel steps, not the class's rule
        assert torch.equal(plain_p, kernel_p), step


def test_it_applies_only_where_nothing_else_of_step_matters() -> None:
    p = torch.zeros(3, requires_grad=True)
    assert kernel_step(torch.optim.Adam([p], lr=0.1)) is None  # not fused
    assert kernel_step(torch.optim.Adamax([p], lr=0.1)) is None  # neither kernel nor rule
    assert kernel_step(torch.optim.RMSprop([p], lr=0.1, foreach=True)) is None  # multi-tensor
    assert kernel_step(torch.optim.RMSprop([p], lr=0.1, differentiable=True)) is None
    complex_p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    assert kernel_step(torch.optim.Adadelta([complex_p], lr=0.1)) is None
    assert kernel_step(torch.optim.RMSprop([p], lr=0.1)) is not None
    assert kernel_step(torch.optim.Adam([p], lr=torch.tensor(0.1), fused=True)) is None
    q = torch.zeros(3, requires_grad=True)
    two_groups = torch.optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1, fused=True)
    assert kernel_step(two_groups) is None
    assert kernel_step(torch.optim.SGD([p], lr=0.1, fused=True)) is not None
    assert direct_step(torch.optim.SGD([p], lr=0.1, fused=True)) is not None
