"""Data set specs. The engine's registry (workers/engine/datasets.py) implements each name.

Every data set is a tagged-union member keyed by ``name``. Sample data sets share the split
parameters of ``SampleData``; 2-D landscapes (services/spec/landscapes.py) are functions, not
samples, and train the ``point`` model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from services.spec.base import StrictModel
from services.spec.landscapes import LANDSCAPE_MODELS

Fraction = Annotated[float, Field(ge=0.0, lt=0.9)]
SplitSeed = Annotated[
    int,
    Field(
        ge=0,
        le=2**31 - 1,
        description="seed of the data generation and the splits; fixed per job so every run "
        "sees the same data",
    ),
]
Task = Literal["classification", "regression", "landscape"]


class SampleData(StrictModel):
    """Split parameters every sample data set shares: stratified for classification."""

    task: ClassVar[Task] = "classification"
    val_fraction: Fraction = Field(0.2, gt=0.0, description="share held out for validation")
    test_fraction: Fraction = Field(0.2, description="share held out for the final test")
    seed: SplitSeed = 0

    @model_validator(mode="after")
    def _check_fractions(self) -> SampleData:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction must leave at least 10 % for training, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class DigitsData(SampleData):
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 samples, 64 features, 10 classes."""

    name: Literal["digits"]


class ClassificationData(SampleData):
    """A synthetic classification problem (scikit-learn's make_classification)."""

    name: Literal["classification"]
    n_samples: int = Field(2000, ge=50, le=200_000)
    n_features: int = Field(20, ge=2, le=1000)
    n_informative: int = Field(10, ge=1, le=1000)
    n_classes: int = Field(4, ge=2, le=50)
    class_sep: float = Field(1.0, gt=0.0, le=10.0, description="larger is easier")
    flip_y: float = Field(0.01, ge=0.0, le=0.5, description="share of labels flipped at random")

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


SAMPLE_MODELS: dict[str, type[SampleData]] = {
    "digits": DigitsData,
    "classification": ClassificationData,
}
DATASET_MODELS: dict[str, type[StrictModel]] = {**SAMPLE_MODELS, **LANDSCAPE_MODELS}


def dataset_task(spec: StrictModel) -> Task:
    return "landscape" if type(spec) in LANDSCAPE_MODELS.values() else type(spec).task  # type: ignore[attr-defined, no-any-return]


if TYPE_CHECKING:
    DatasetSpec = StrictModel
else:
    DatasetSpec = Annotated[
        Union[tuple(Annotated[model, Tag(name)] for name, model in DATASET_MODELS.items())],  # noqa: UP007
        Discriminator("name"),
    ]
