"""Model specs. The engine's registry (workers/engine/models.py) implements each name."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field

from services.spec.base import StrictModel

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu"]
# Data sets whose samples are images (channels x height x width), for the convolutional models.
IMAGE_DATASETS = frozenset({"mnist", "fashion_mnist", "cifar10"})


class LinearModel(StrictModel):
    """Softmax regression (or linear regression): one linear layer from features to outputs."""

    name: Literal["linear"]


class MLPModel(StrictModel):
    """A multi-layer perceptron: linear layers of the given widths with an activation between."""

    name: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default=[128], min_length=1, max_length=16, description="widths of the hidden layers"
    )
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden layer")
    norm: Literal["batch", "layer"] | None = Field(
        None, description="batch or layer normalisation after each hidden linear layer"
    )


class CNNModel(StrictModel):
    """LeNet-5: two convolution + pooling stages and three linear layers (1x28x28 or 3x32x32)."""

    name: Literal["cnn"]
    activation: Activation = "relu"


class ResNetModel(StrictModel):
    """A small ResNet for 32x32 images: three stages of basic residual blocks."""

    name: Literal["resnet"]
    width: int = Field(16, ge=4, le=128, description="channels of the first stage")
    blocks: int = Field(1, ge=1, le=8, description="residual blocks per stage")


class PointModel(StrictModel):
    """The point (x, y) itself, for 2-D landscapes: the loss is the function's value."""

    name: Literal["point"]


MODEL_MODELS: dict[str, type[StrictModel]] = {
    "linear": LinearModel,
    "mlp": MLPModel,
    "cnn": CNNModel,
    "resnet": ResNetModel,
    "point": PointModel,
}
ModelSpec = Annotated[
    LinearModel | MLPModel | CNNModel | ResNetModel | PointModel, Discriminator("name")
]
