"""Build a ``torch.optim`` optimizer from an entry of the catalog (services/spec/optimizers.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from workers.engine import optimizer_classes
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


def alone_reason(torch_class: str) -> str | None:
    """Why a run of ``torch_class`` cannot train in a fused group, or None where it can."""
    if needs_closure_class(torch_class):
        return f"{torch_class} re-evaluates the loss through a closure"
    return optimizer_classes.fusion_blocker(torch_class)
