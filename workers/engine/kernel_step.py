"""torch.optim's fused update kernels called directly, once a member's optimizer has state.

A fused group steps each member's optimizer on its own (one flat row of the parameter bank
each), and for the classes with a fused CPU/CUDA kernel (SGD, Adam, AdamW, Adagrad) the
kernel itself is a small part of that call: measured on this project's 2-core AMD EPYC VM
(torch 2.13, one thread, 9,610 parameters, digits' MLP), Adam's ``step`` took about 90 µs, of
which the kernel 26 µs and the step counter's increment 10 to 19 µs; the rest is the
Python of ``step``, ``_init_group``, ``adam()`` and ``_fused_adam`` (grouping the tensors by
device, dicts for the grad scaler, checks), paid once per member and step.

``kernel_step`` returns what those functions end in: the step counter's increment and the
kernel, with the group's hyperparameters read at every call (a schedule changes ``lr``), the
same kernel and arguments, so the same numbers bit for bit (tests/unit/test_kernel_step.py).
It applies only where nothing else of ``step`` matters: the class itself (not a subclass),
``fused=True``, one parameter group, no ``differentiable``/``capturable``, no tensor ``lr``,
and from the second step on (the first, through the class's own rule, creates the state).
Elsewhere it returns None, and the member steps as before (``step.direct_step``).

RMSprop and Adadelta have no fused kernel: on the CPU their ``step`` ends in the
single-tensor rule (``_single_tensor_rmsprop``, ``_single_tensor_adadelta``), a few
element-wise ops per tensor, each a few µs of dispatch on this CPU and all of them a third
of the call (RMSprop 53 µs, Adadelta 84 µs, of which the ops 27 and about 45).
``kernel_step`` returns those ops, in the same order with the same arguments, where the
class would run them: real CPU tensors, ``foreach`` not asked for (on CUDA torch takes the
multi-tensor rule instead, and so does ``step`` here), one parameter group, no
``differentiable``/``capturable``, from the second step on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

KernelStep = Callable[[], bool]  # True when it stepped; False: not ready, step the usual way


def kernel_step(optimizer: torch.optim.Optimizer) -> KernelStep | None:
    """The direct kernel step of ``optimizer``, or None where it does not apply."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if group.get("differentiable") or group.get("capturable"):
        return None
    if isinstance(group["lr"], torch.Tensor):
        return None
    cls = type(optimizer)
    if group.get("fused"):
        build = _KERNELS.get(cls)
        return None if build is None else build(optimizer)
    rule = _RULES.get(cls)
    single_tensor = not group.get("foreach") and all(
        p.device.type == "cpu" and not p.is_complex() for p in group["params"]
    )
    return rule(optimizer) if rule is not None and single_tensor else None


def _sgd(optimizer: torch.optim.Optimizer) -> KernelStep:
    def step() -> bool:
        group = optimizer.param_groups[0]  # anew: loading a state replaces the dicts
        params: list[torch.Tensor] = group["params"]
        momentum = group["momentum"]
        buffers: list[torch.Tensor] = []
        if momentum != 0:
            buffers = [optimizer.state[p].get("momentum_buffer") for p in params]
            if any(b is None for b in buffers):
                return False
        torch._fused_sgd_(
            params,
            [p.grad for p in params],  # type: ignore[misc]
            buffers,
            weight_decay=group["weight_decay"],
            momentum=momentum,
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            is_first_step=False,
            grad_scale=None,
            found_inf=None,
        )
        return True

    return step


Group = dict[str, Any]
State = dict[str, Any]
Rule = Callable[[Group, list[torch.Tensor], list[State]], None]


def _with_state(rule: Rule) -> Callable[[torch.optim.Optimizer], KernelStep]:
    """The kernel step of ``rule(group, params, states)``: the group read anew at each call
    (a schedule changes ``lr``; loading a state replaces the dicts), the step counters
    advanced first as ``step()`` does, and nothing done before the first step (no state)."""

    def build(optimizer: torch.optim.Optimizer) -> KernelStep:
        def step() -> bool:
            group = optimizer.param_groups[0]
            params: list[torch.Tensor] = group["params"]
            states = _counted_states(optimizer, params)
            if states is None:
                return False
            rule(group, params, states)
            return True

        return step

    return build


def _adam(group: Group, params: list[torch.Tensor], states: list[State]) -> None:
    amsgrad = group["amsgrad"]
    kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
    kernel(
        params,
        [p.grad for p in params],  # type: ignore[misc]
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
        [s["step"] for s in states],
        amsgrad=amsgrad,
        lr=group["lr"],
        beta1=float(group["betas"][0]),
        beta2=float(group["betas"][1]),
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        grad_scale=None,
        found_inf=None,
    )


def _adagrad(group: Group, params: list[torch.Tensor], states: list[State]) -> None:
    torch._fused_adagrad_(
        params,
        [p.grad for p in params],  # type: ignore[misc]
        [s["sum"] for s in states],
        [s["step"] for s in states],
        lr=group["lr"],
        lr_decay=group["lr_decay"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        grad_scale=None,
        found_inf=None,
    )


def _gradient(group: Group, param: torch.Tensor) -> torch.Tensor:
    """The gradient a single-tensor rule steps with: negated to maximize, weight decay added
    (a new tensor then, as torch's rules make it; ``param.grad`` itself is left alone)."""
    grad: torch.Tensor = param.grad  # type: ignore[assignment]
    grad = -grad if group["maximize"] else grad
    if group["weight_decay"] != 0:
        grad = grad.add(param, alpha=group["weight_decay"])
    return grad


def _rmsprop(group: Group, params: list[torch.Tensor], states: list[State]) -> None:
    lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
    for param, state in zip(params, states, strict=True):
        grad = _gradient(group, param)
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)


def _adadelta(group: Group, params: list[torch.Tensor], states: list[State]) -> None:
    lr, rho, eps = group["lr"], group["rho"], group["eps"]
    for param, state in zip(params, states, strict=True):
        grad = _gradient(group, param)
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-lr)


def _counted_states(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> list[State] | None:
    """The parameters' states with their step counters advanced, as ``step()`` does before
    the kernel; None before the first step (no state yet), with nothing changed."""
    states = [optimizer.state[p] for p in params]
    if not all(states):
        return None
    torch._foreach_add_([s["step"] for s in states], 1)
    return states


_KERNELS: dict[type, Callable[[torch.optim.Optimizer], KernelStep]] = {
    torch.optim.SGD: _sgd,
    torch.optim.Adam: _with_state(_adam),
    torch.optim.AdamW: _with_state(_adam),
    torch.optim.Adagrad: _with_state(_adagrad),
}
# The classes without a fused kernel whose single-tensor rule is called directly.
_RULES: dict[type, Callable[[torch.optim.Optimizer], KernelStep]] = {
    torch.optim.RMSprop: _with_state(_rmsprop),
    torch.optim.Adadelta: _with_state(_adadelta),
}
