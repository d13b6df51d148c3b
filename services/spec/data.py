"""Data set specs. The engine's registry (workers/engine/datasets.py) implements each name.

Every data set is a tagged-union member keyed by ``name``. Sample data sets share the split
parameters of ``SampleData``: bundled (scikit-learn), generated (mnist1d, synthetic), read
from files in the configured data folder (mnist, fashion_mnist, cifar10) or uploaded. 2-D
landscapes (services/spec/landscapes.py) are functions, not samples, and train the ``point``
model.
"""

from __future__ import annotations

import uuid
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


class IrisData(SampleData):
    """scikit-learn's bundled iris flowers: 150 samples, 4 features, 3 classes."""

    name: Literal["iris"]


class WineData(SampleData):
    """scikit-learn's bundled wine recognition: 178 samples, 13 features, 3 classes."""

    name: Literal["wine"]


class BreastCancerData(SampleData):
    """scikit-learn's bundled breast cancer Wisconsin: 569 samples, 30 features, 2 classes."""

    name: Literal["breast_cancer"]


class Mnist1dData(SampleData):
    """MNIST-1D, made locally by the mnist1d package: 40-point 1-D digit signals, 10 classes."""

    name: Literal["mnist1d"]
    n_samples: int = Field(
        5000,
        ge=100,
        le=50_000,
        multiple_of=10,
        description="samples in all (n_samples / 10 per class); generation takes about "
        "0.4 ms per sample",
    )


class MoonsData(SampleData):
    """Two interleaving half circles in 2-D (scikit-learn's make_moons), 2 classes."""

    name: Literal["moons"]
    n_samples: int = Field(1000, ge=50, le=200_000)
    noise: float = Field(0.1, ge=0.0, le=2.0, description="std of the Gaussian noise added")


class CirclesData(SampleData):
    """A small circle inside a large one in 2-D (scikit-learn's make_circles), 2 classes."""

    name: Literal["circles"]
    n_samples: int = Field(1000, ge=50, le=200_000)
    noise: float = Field(0.1, ge=0.0, le=2.0, description="std of the Gaussian noise added")
    factor: float = Field(
        0.5, gt=0.0, lt=1.0, description="radius of the inner circle relative to the outer"
    )


class BlobsData(SampleData):
    """Isotropic Gaussian clusters, one class each (scikit-learn's make_blobs)."""

    name: Literal["blobs"]
    n_samples: int = Field(1000, ge=50, le=200_000)
    n_features: int = Field(2, ge=1, le=1000)
    centers: int = Field(3, ge=2, le=50, description="clusters, and so classes")
    cluster_std: float = Field(1.0, gt=0.0, le=50.0, description="std of each cluster")


class SpiralsData(SampleData):
    """Interleaved spiral arms in 2-D, one class per arm: not linearly separable."""

    name: Literal["spirals"]
    n_samples: int = Field(1000, ge=50, le=200_000)
    n_classes: int = Field(2, ge=2, le=10, description="spiral arms, one class each")
    noise: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="std of the Gaussian noise added (the arms end at radius 1)",
    )
    turns: float = Field(1.5, gt=0.0, le=5.0, description="turns each arm makes around the centre")


class RegressionData(SampleData):
    """A synthetic linear regression problem (scikit-learn's make_regression)."""

    task: ClassVar[Task] = "regression"
    name: Literal["regression"]
    n_samples: int = Field(1000, ge=50, le=200_000)
    n_features: int = Field(10, ge=1, le=1000)
    n_informative: int = Field(5, ge=1, le=1000, description="features the target depends on")
    noise: float = Field(
        10.0,
        ge=0.0,
        le=1000.0,
        description="std of the Gaussian noise on the target (coefficients are up to 100)",
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> RegressionData:
        if self.n_informative > self.n_features:
            raise ValueError(
                f"n_informative ({self.n_informative}) must not exceed "
                f"n_features ({self.n_features})"
            )
        return self


class _FileData(SampleData):
    """A data set read from files in the configured data folder (OPTBENCH_DATA_DIR)."""

    max_samples: int | None = Field(
        None,
        ge=100,
        le=1_000_000,
        description="take a seeded, stratified subsample of this many samples "
        "(official train and test parts together); null takes all",
    )


class MnistData(_FileData):
    """MNIST handwritten digits, 70,000 28x28 grey images, 10 classes (<data>/mnist/)."""

    name: Literal["mnist"]


class FashionMnistData(_FileData):
    """Fashion-MNIST, 70,000 28x28 grey images of clothing, 10 classes (<data>/fashion_mnist/)."""

    name: Literal["fashion_mnist"]


class Cifar10Data(_FileData):
    """CIFAR-10, 60,000 32x32 colour images, 10 classes (<data>/cifar-10-batches-py/)."""

    name: Literal["cifar10"]


class UploadData(SampleData):
    """A data set uploaded by a user (NPZ or CSV), named by its id."""

    name: Literal["upload"]
    id: uuid.UUID = Field(description="the uploaded data set's id")


SAMPLE_MODELS: dict[str, type[SampleData]] = {
    "digits": DigitsData,
    "iris": IrisData,
    "wine": WineData,
    "breast_cancer": BreastCancerData,
    "mnist1d": Mnist1dData,
    "moons": MoonsData,
    "circles": CirclesData,
    "blobs": BlobsData,
    "spirals": SpiralsData,
    "classification": ClassificationData,
    "regression": RegressionData,
    "mnist": MnistData,
    "fashion_mnist": FashionMnistData,
    "cifar10": Cifar10Data,
    "upload": UploadData,
}
DATASET_MODELS: dict[str, type[StrictModel]] = {**SAMPLE_MODELS, **LANDSCAPE_MODELS}


def dataset_task(spec: StrictModel) -> Task:
    """The spec's task. An upload says "classification" here: its real task is the stored
    data set's (the dataset row's ``task``), which only the API layer can read."""
    return "landscape" if type(spec) in LANDSCAPE_MODELS.values() else type(spec).task  # type: ignore[attr-defined]


if TYPE_CHECKING:
    DatasetSpec = StrictModel
else:
    DatasetSpec = Annotated[
        Union[tuple(Annotated[model, Tag(name)] for name, model in DATASET_MODELS.items())],  # noqa: UP007
        Discriminator("name"),
    ]
