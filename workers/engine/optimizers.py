"""Build a ``torch.optim`` optimizer from an entry of the catalog (services/spec/optimizers.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from workers.engine import optimizer_classes, optimizer_probe
from workers.engine.config import OptimizerConfig


def build(config: OptimizerConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    cls = optimizer_classes.resolve(config.torch_class)  # torch.optim's, or a plugin's
    # JSON turns tuples (betas, etas, ...) into lists; torch wants tuples.
    kwargs: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in config.hyperparameters.items()
    }
    params = list(params)
    if "fused" in inspect.signature(cls.__init__).parameters and "fused" not in kwargs:
        # One kernel per step instead of several element-wise passes; same update rule.
        try:
            return cls(params, **kwargs, fused=True)  # type: ignore[call-arg]
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            pass
    return cls(params, **kwargs)


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """LBFGS re-evaluates the loss several times per step through a closure."""
    return isinstance(optimizer, torch.optim.LBFGS)


def needs_closure_class(torch_class: str) -> bool:
    return torch_class == "LBFGS"


# Parameter groups (services/spec/groups.py): each group's optimizer over its own parameters.
class GroupedOptimizer(torch.optim.Optimizer):
    """Several optimizers stepped as one: what a learning-rate scheduler, the checkpoint and
    the recorder see of a grouped entry. Its ``param_groups`` are the optimizers' own group
    dicts (the same objects), so a schedule sets every group's rate, each relative to its own
    initial rate, and the first group's rate is the one recorded."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        classes = {type(optimizer) for optimizer in optimizers}
        # One class: its defaults (a one-cycle schedule cycles its momentum); several: none,
        # since a schedule that cycles momentum would set one class's key on the other's.
        defaults = dict(optimizers[0].defaults) if len(classes) == 1 else {}
        groups = [group for optimizer in optimizers for group in optimizer.param_groups]
        super().__init__(groups, defaults)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)


def build_grouped(config: OptimizerConfig, named: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizers of a grouped entry over a member's parameters (``named``: by module
    name), one per group, as one ``GroupedOptimizer``; every parameter in exactly one group."""
    assigned = [name for group in config.groups for name in group.parameters]
    if sorted(assigned) != sorted(named) or len(set(assigned)) != len(assigned):
        raise ValueError(
            f"the parameter groups of '{config.label}' name {sorted(assigned)}, but the model's "
            f"parameters are {sorted(named)}; each must be in exactly one group"
        )
    optimizers = [
        build(
            OptimizerConfig(config.label, group.name, group.torch_class, group.hyperparameters),
            [named[name] for name in group.parameters],
        )
        for group in config.groups
    ]
    return GroupedOptimizer(optimizers)


def alone_reason(torch_class: str) -> str | None:
    """Why a run of ``torch_class`` cannot train in a fused group, or None where it can."""
    if needs_closure_class(torch_class):
        return f"{torch_class} re-evaluates the loss through a closure"
    return optimizer_probe.fusion_blocker(torch_class)
