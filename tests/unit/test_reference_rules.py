"""torch.optim against the lecture's update rules (``tests/reference_rules.py``), step by step.

Every comparison runs on a small random linear-regression problem in float64: the loss of each
step is the mean squared error on the next mini-batch, and its gradient comes from autograd.
torch.optim and the reference rule start from the same parameters (a matrix ``W`` and a bias
``b``) and must agree to 1e-6 after every one of ``STEPS`` steps. Where torch's form differs
from the lecture's, a test pins down the exact relation (see ``docs/optimizers.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from tests.reference_rules import (
    State,
    adadelta_step,
    adagrad_step,
    adam_step,
    momentum_step,
    nag_lookahead,
    nag_step,
    rmsprop_step,
    sgd_step,
    torch_sgd_step,
)

SEEDS = [0, 1, 2]
SHAPES = [(3, 1), (5, 2)]  # (features, outputs): W is features x outputs, b has outputs entries
STEPS = 20
TOL = {"rtol": 1e-6, "atol": 1e-6}
F64 = torch.float64

Rule = Callable[[Tensor, Tensor, State], tuple[Tensor, State]]
MakeOptimizer = Callable[[list[Tensor]], torch.optim.Optimizer]


@dataclass
class Problem:
    """Mean squared error of ``x @ W + b`` against ``y``, one mini-batch per step."""

    x: Tensor
    y: Tensor
    start: list[Tensor]
    scale: float = 1.0  # multiplies the loss; a tiny scale makes the squared-gradient sums tiny
    batch: int = 8

    def loss(self, params: list[Tensor], step: int) -> Tensor:
        first = (step * self.batch) % len(self.x)
        xb, yb = self.x[first : first + self.batch], self.y[first : first + self.batch]
        w, b = params
        return self.scale * ((xb @ w + b - yb) ** 2).mean()

    def grads(self, params: list[Tensor], step: int) -> list[Tensor]:
        leaves = [p.detach().clone().requires_grad_(True) for p in params]
        return list(torch.autograd.grad(self.loss(leaves, step), leaves))


def make_problem(seed: int, shape: tuple[int, int], scale: float = 1.0) -> Problem:
    features, outputs = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, features, generator=gen, dtype=F64)
    w_true = torch.randn(features, outputs, generator=gen, dtype=F64)
    y = x @ w_true + 0.1 * torch.randn(32, outputs, generator=gen, dtype=F64)
    start = [
        torch.randn(features, outputs, generator=gen, dtype=F64),
        torch.randn(outputs, generator=gen, dtype=F64),
    ]
    return Problem(x, y, start, scale)


class TorchRun(NamedTuple):
    trajectory: list[list[Tensor]]  # the parameters after each step
    buffers: list[list[Tensor]]  # each parameter's momentum_buffer after each step (SGD only)


def run_torch(
    problem: Problem, make: MakeOptimizer, steps: int = STEPS, lrs: list[float] | None = None
) -> TorchRun:
    """Train with torch.optim, the engine's way; ``lrs`` sets the learning rate of each step."""
    params = [p.clone().requires_grad_(True) for p in problem.start]
    optimizer = make(params)
    trajectory, buffers = [], []
    for step in range(steps):
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        optimizer.zero_grad(set_to_none=True)
        problem.loss(params, step).backward()
        optimizer.step()
        trajectory.append([p.detach().clone() for p in params])
        state = [optimizer.state[p] for p in params]
        buffers.append([s["momentum_buffer"].clone() for s in state if "momentum_buffer" in s])
    return TorchRun(trajectory, buffers)


def run_reference(
    problem: Problem, rule: Rule, steps: int = STEPS, lrs: list[float] | None = None
) -> tuple[list[list[Tensor]], list[list[State]]]:
    """Train with a reference rule: (parameters after each step, states after each step)."""
    thetas = [p.clone() for p in problem.start]
    states: list[State] = [{} for _ in thetas]
    trajectory, state_history = [], []
    for step in range(steps):
        step_rule = rule if lrs is None else partial(rule, lr=lrs[step])
        grads = problem.grads(thetas, step)
        updated = [step_rule(t, g, s) for t, g, s in zip(thetas, grads, states, strict=True)]
        thetas = [theta for theta, _ in updated]
        states = [state for _, state in updated]
        trajectory.append(thetas)
        state_history.append(states)
    return trajectory, state_history


def assert_same_trajectory(actual: list[list[Tensor]], expected: list[list[Tensor]]) -> None:
    """Every parameter agrees to 1e-6 after every step (names the first step that does not)."""
    assert len(actual) == len(expected) > 0
    for index in range(len(actual[0])):
        got = torch.stack([params[index] for params in actual])
        want = torch.stack([params[index] for params in expected])
        close = torch.isclose(got, want, **TOL).flatten(1).all(dim=1)
        if not close.all():
            step = int((~close).nonzero()[0]) + 1
            gap = (got[step - 1] - want[step - 1]).abs().max().item()
            raise AssertionError(f"parameter {index} differs after step {step} by {gap:.3g}")


def max_gap(a: list[list[Tensor]], b: list[list[Tensor]]) -> float:
    return max(
        (x - y).abs().max().item()
        for xs, ys in zip(a, b, strict=True)
        for x, y in zip(xs, ys, strict=True)
    )


# name: (torch.optim factory, reference rule in the form torch uses)
CASES: dict[str, tuple[MakeOptimizer, Rule]] = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05), partial(sgd_step, lr=0.05)),
    "sgd_weight_decay": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=0.1),
        partial(sgd_step, lr=0.05, weight_decay=0.1),
    ),
    "momentum": (
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9),
        partial(momentum_step, lr=0.02, gamma=0.9),
    ),
    "momentum_dampening_weight_decay": (
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, dampening=0.3, weight_decay=0.1),
        partial(momentum_step, lr=0.02, gamma=0.9, dampening=0.3, weight_decay=0.1),
    ),
    "nag_torch_form": (
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
        partial(torch_sgd_step, lr=0.02, momentum=0.9, nesterov=True),
    ),
    "adagrad": (
        lambda ps: torch.optim.Adagrad(ps, lr=0.1),
        partial(adagrad_step, lr=0.1, eps=1e-10, eps_inside_sqrt=False),
    ),
    "rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9),
        partial(rmsprop_step, lr=0.01, gamma=0.9, eps=1e-8, eps_inside_sqrt=False),
    ),
    "adadelta": (
        lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.9),
        partial(adadelta_step, rho=0.9, eps=1e-6),
    ),
    "adadelta_lr": (
        lambda ps: torch.optim.Adadelta(ps, lr=0.5, rho=0.95),
        partial(adadelta_step, rho=0.95, eps=1e-6, lr=0.5),
    ),
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01),
        partial(adam_step, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, eps_inside_sqrt=False),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(CASES))
def test_torch_optim_follows_reference_rule(name: str, seed: int, shape: tuple[int, int]) -> None:
    make, rule = CASES[name]
    problem = make_problem(seed, shape)
    expected, _ = run_reference(problem, rule)
    actual = run_torch(problem, make).trajectory
    assert_same_trajectory(actual, expected)
    assert max_gap(actual, [problem.start] * STEPS) > 1e-3  # the parameters really moved


# --- Momentum: the lecture's velocity carries the learning rate, torch's buffer does not ---


@pytest.mark.parametrize("dampening", [0.0, 0.3])
@pytest.mark.parametrize("seed", SEEDS)
def test_momentum_velocity_is_lr_times_torch_buffer(seed: int, dampening: float) -> None:
    lr, gamma = 0.02, 0.9
    problem = make_problem(seed, (3, 2))
    make = partial(torch.optim.SGD, lr=lr, momentum=gamma, dampening=dampening)
    _, states = run_reference(
        problem, partial(momentum_step, lr=lr, gamma=gamma, dampening=dampening)
    )
    buffers = run_torch(problem, make).buffers
    for step_states, step_buffers in zip(states, buffers, strict=True):
        for state, buf in zip(step_states, step_buffers, strict=True):
            torch.testing.assert_close(state["v"], lr * buf, **TOL)


def test_torch_momentum_does_not_dampen_the_first_step() -> None:
    problem = make_problem(0, (3, 1))
    make = partial(torch.optim.SGD, lr=0.02, momentum=0.9, dampening=0.3)
    buffers = run_torch(problem, make, steps=1).buffers
    first_grads = problem.grads(problem.start, 0)
    for buf, g in zip(buffers[0], first_grads, strict=True):
        torch.testing.assert_close(buf, g, **TOL)  # buf_1 = g_1, not (1 - 0.3) * g_1


def test_with_a_learning_rate_schedule_only_the_torch_form_matches() -> None:
    """When lr changes, the lecture's v keeps the old rates; torch's buffer rescales at once."""
    problem = make_problem(1, (3, 2))
    lrs = [0.02 if step < 10 else 0.005 for step in range(STEPS)]
    actual = run_torch(problem, partial(torch.optim.SGD, lr=lrs[0], momentum=0.9), lrs=lrs)
    torch_form, _ = run_reference(problem, partial(torch_sgd_step, momentum=0.9), lrs=lrs)
    lecture_form, _ = run_reference(problem, partial(momentum_step, gamma=0.9), lrs=lrs)
    assert_same_trajectory(actual.trajectory, torch_form)
    assert_same_trajectory(actual.trajectory[:10], lecture_form[:10])  # same while lr is fixed
    assert max_gap(actual.trajectory[10:], lecture_form[10:]) > 1e-4  # then they part


# --- NAG: torch's parameter is the lecture's look-ahead point ---


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_nag_torch_parameter_is_lecture_lookahead_point(seed: int, shape: tuple[int, int]) -> None:
    lr, gamma = 0.02, 0.9
    problem = make_problem(seed, shape)
    actual, buffers = run_torch(
        problem, partial(torch.optim.SGD, lr=lr, momentum=gamma, nesterov=True)
    )

    thetas = [p.clone() for p in problem.start]
    states: list[State] = [{} for _ in thetas]
    for step in range(STEPS):
        lookahead = [nag_lookahead(t, s, gamma=gamma) for t, s in zip(thetas, states, strict=True)]
        grads = problem.grads(lookahead, step)  # the lecture's gradient at theta - gamma * v
        updated = [
            nag_step(t, g, s, lr=lr, gamma=gamma)
            for t, g, s in zip(thetas, grads, states, strict=True)
        ]
        thetas, states = [t for t, _ in updated], [s for _, s in updated]
        for theta, state, p, buf in zip(thetas, states, actual[step], buffers[step], strict=True):
            torch.testing.assert_close(p, nag_lookahead(theta, state, gamma=gamma), **TOL)
            torch.testing.assert_close(state["v"], lr * buf, **TOL)
    # ... and the lecture's own iterate theta is a different point (by gamma * v).
    assert max_gap([thetas], [actual[-1]]) > 1e-4


# --- Epsilon: inside the square root in the lecture, outside in torch (except AdaDelta) ---

EPS_CASES: dict[str, tuple[MakeOptimizer, Callable[..., tuple[Tensor, State]]]] = {
    "adagrad": (
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10),
        partial(adagrad_step, lr=0.1, eps=1e-10),
    ),
    "rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8),
        partial(rmsprop_step, lr=0.01, gamma=0.9, eps=1e-8),
    ),
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8),
        partial(adam_step, lr=0.01, eps=1e-8),
    ),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(EPS_CASES))
def test_eps_placement_matters_only_when_squared_gradients_are_small(name: str, seed: int) -> None:
    make, rule = EPS_CASES[name]
    outside = partial(rule, eps_inside_sqrt=False)  # torch's form
    inside = partial(rule, eps_inside_sqrt=True)  # the lecture's form

    # Ordinary gradients (G >> eps): both forms match torch to 1e-6.
    problem = make_problem(seed, (3, 2))
    actual = run_torch(problem, make).trajectory
    assert_same_trajectory(actual, run_reference(problem, outside)[0])
    assert_same_trajectory(actual, run_reference(problem, inside)[0])

    # Gradients around 1e-5 (G around 1e-10, comparable to or below eps): only torch's form does.
    tiny = make_problem(seed, (3, 2), scale=1e-5)
    actual = run_torch(tiny, make).trajectory
    assert_same_trajectory(actual, run_reference(tiny, outside)[0])
    assert max_gap(actual, run_reference(tiny, inside)[0]) > 1e-3


# --- The lecture's autograd example: the gradient path the engine relies on ---


def lecture_tensors() -> tuple[Tensor, Tensor]:
    a = torch.tensor([2.0], dtype=F64, requires_grad=True)
    b = torch.tensor([6.0], dtype=F64, requires_grad=True)
    return a, b


def q_of(a: Tensor, b: Tensor) -> Tensor:
    return 3 * a**3 - b**2


def test_lecture_autograd_example() -> None:
    a, b = lecture_tensors()
    assert a.grad is None and b.grad is None  # nothing until backward
    q = q_of(a, b)
    assert q.item() == -12.0  # 3 * 2^3 - 6^2
    assert q.grad_fn is not None  # the forward pass recorded the graph
    q.backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.tolist() == [36.0]  # dQ/da = 9 a^2
    assert b.grad.tolist() == [-12.0]  # dQ/db = -2 b


def test_backward_accumulates_until_zero_grad() -> None:
    a, b = lecture_tensors()
    optimizer = torch.optim.SGD([a, b], lr=0.1)
    q_of(a, b).backward()
    q_of(a, b).backward()  # a second backward without zero_grad adds to .grad
    assert a.grad is not None and b.grad is not None
    assert (a.grad.tolist(), b.grad.tolist()) == ([72.0], [-24.0])

    optimizer.zero_grad(set_to_none=False)  # the lecture's zero_grad: .grad becomes 0
    assert (a.grad.tolist(), b.grad.tolist()) == ([0.0], [0.0])
    optimizer.zero_grad()  # today's default (and the engine's): set_to_none=True
    assert a.grad is None and b.grad is None
    q_of(a, b).backward()
    assert (a.grad.tolist(), b.grad.tolist()) == ([36.0], [-12.0])


def test_step_updates_with_grad_and_lr() -> None:
    a, b = lecture_tensors()
    optimizer = torch.optim.SGD([a, b], lr=0.1)
    optimizer.zero_grad(set_to_none=True)
    q_of(a, b).backward()
    optimizer.step()  # theta <- theta - lr * grad
    torch.testing.assert_close(a.detach(), torch.tensor([2.0 - 0.1 * 36.0], dtype=F64))
    torch.testing.assert_close(b.detach(), torch.tensor([6.0 + 0.1 * 12.0], dtype=F64))
