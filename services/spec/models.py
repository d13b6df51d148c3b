"""Model specs. The engine's registry (workers/engine/models.py) implements each name."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field

from services.spec.base import StrictModel

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu"]


class LinearModel(StrictModel):
    """Softmax regression: one linear layer from the features to the class logits."""

    name: Literal["linear"]


class MLPModel(StrictModel):
    """A multi-layer perceptron: linear layers of the given widths with an activation between."""

    name: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default=[128], min_length=1, max_length=16, description="widths of the hidden layers"
    )
    activation: Activation = "relu"


MODEL_MODELS: dict[str, type[StrictModel]] = {"linear": LinearModel, "mlp": MLPModel}
ModelSpec = Annotated[LinearModel | MLPModel, Discriminator("name")]
