"""Models: registry of builders ``(n_features, n_classes, **params) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from workers.engine.config import ModelConfig
from workers.engine.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


@MODELS.register("linear")
def _linear(n_features: int, n_classes: int) -> nn.Module:
    return nn.Linear(n_features, n_classes)


@MODELS.register("mlp")
def _mlp(n_features: int, n_classes: int, hidden: list[int], activation: str = "relu") -> nn.Module:
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def build(config: ModelConfig, n_features: int, n_classes: int) -> nn.Module:
    params: dict[str, Any] = dict(config.params)
    return MODELS.get(config.name)(n_features, n_classes, **params)
