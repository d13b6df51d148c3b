"""Data set specs. The engine's registry (workers/engine/datasets.py) implements each name."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, model_validator

from services.spec.base import StrictModel

ValFraction = Annotated[
    float, Field(gt=0.0, lt=0.9, description="share of samples held out for validation")
]
SplitSeed = Annotated[
    int,
    Field(
        ge=0,
        le=2**31 - 1,
        description="seed of the data generation and the train/val split; "
        "fixed per job so every run sees the same data",
    ),
]


class DigitsData(StrictModel):
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 samples, 64 features, 10 classes."""

    name: Literal["digits"]
    val_fraction: ValFraction = 0.2
    seed: SplitSeed = 0


class ClassificationData(StrictModel):
    """A synthetic classification problem (scikit-learn's make_classification)."""

    name: Literal["classification"]
    n_samples: int = Field(2000, ge=50, le=200_000)
    n_features: int = Field(20, ge=2, le=1000)
    n_informative: int = Field(10, ge=1, le=1000)
    n_classes: int = Field(4, ge=2, le=50)
    class_sep: float = Field(1.0, gt=0.0, le=10.0, description="larger is easier")
    flip_y: float = Field(0.01, ge=0.0, le=0.5, description="share of labels flipped at random")
    val_fraction: ValFraction = 0.2
    seed: SplitSeed = 0

    @model_validator(mode="after")
    def _check_sizes(self) -> ClassificationData:
        if self.n_informative > self.n_features:
            raise ValueError(
                f"n_informative ({self.n_informative}) must not exceed "
                f"n_features ({self.n_features})"
            )
        if self.n_classes * 2 > 2**self.n_informative:
            raise ValueError(
                f"n_classes ({self.n_classes}) needs n_informative >= "
                f"{(self.n_classes * 2 - 1).bit_length()} (two clusters per class)"
            )
        return self


DATASET_MODELS: dict[str, type[StrictModel]] = {
    "digits": DigitsData,
    "classification": ClassificationData,
}
DatasetSpec = Annotated[DigitsData | ClassificationData, Discriminator("name")]
