"""Models: a registry of builders ``(input_shape, n_outputs, **params) -> nn.Module``.

``n_outputs`` is the number of classes, or 1 for regression. Tabular models flatten their
input; the convolutional ones need images (C x H x W) and say so otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
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
def _linear(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs))


@MODELS.register("mlp")
def _mlp(
    input_shape: tuple[int, ...],
    n_outputs: int,
    hidden: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str | None = None,
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(size))
        elif norm == "layer":
            layers.append(nn.LayerNorm(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model '{model}' needs images (channels x height x width), but the data set has "
            f"{math.prod(input_shape)} flat features; use 'mlp' or an image data set "
            "(mnist, fashion_mnist, cifar10)"
        )
    channels, height, width = input_shape
    return channels, height, width


@MODELS.register("cnn")
def _cnn(input_shape: tuple[int, ...], n_outputs: int, activation: str = "relu") -> nn.Module:
    """LeNet-5: two 5x5 convolutions with 2x2 pooling, then 120-84-classes.

    For 1x28x28 the first convolution pads by 2 (LeCun's 32x32 input); for 3x32x32 it does not.
    """
    channels, height, width = _image_shape(input_shape, "cnn")
    pad = 2 if height == 28 else 0
    act = ACTIVATIONS[activation]
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=pad),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, channels, height, width)).shape[1]
    return nn.Sequential(
        features, nn.Linear(flat, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, n_outputs)
    )


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


@MODELS.register("resnet")
def _resnet(
    input_shape: tuple[int, ...], n_outputs: int, width: int = 16, blocks: int = 1
) -> nn.Module:
    """A small ResNet for 32x32 images (He et al. 2016, CIFAR variant): three stages of
    ``blocks`` basic blocks with ``width``, 2x and 4x channels, then global average pooling."""
    channels, _, _ = _image_shape(input_shape, "resnet")
    layers: list[nn.Module] = [
        nn.Conv2d(channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for index in range(blocks):
            layers.append(_Block(cin, cout, 2 if stage > 0 and index == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_outputs)]
    return nn.Sequential(*layers)


def build(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    params: dict[str, Any] = dict(config.params)
    return MODELS.get(config.name)(input_shape, n_outputs, **params)
