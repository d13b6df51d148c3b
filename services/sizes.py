"""How big a job is, estimated from its spec without torch (the API process has none):
samples, input shape and outputs of its data set, steps per run, parameters of its model.

The figures follow the engine (workers/engine/datasets.py, problem.py, models.py), and
tests/unit/test_limits.py checks them against it: the parameter counts are exact; the
training split is estimated as the unstratified share, which is at least the engine's
stratified one and at most two samples per class more, so steps per run are not
under-estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from services.db.models import Dataset
from services.spec import JobSpec

# name: (samples, input shape, outputs) of the data sets whose size does not depend on params
_FIXED = {
    "digits": (1797, (64,), 10),
    "iris": (150, (4,), 3),
    "wine": (178, (13,), 3),
    "breast_cancer": (569, (30,), 2),
    "mnist": (70_000, (1, 28, 28), 10),
    "fashion_mnist": (70_000, (1, 28, 28), 10),
    "cifar10": (60_000, (3, 32, 32), 10),
}
# name: (features, outputs) of generated data sets, from their parameters
_GENERATED = {
    "mnist1d": lambda d: (40, 10),
    "moons": lambda d: (2, 2),
    "circles": lambda d: (2, 2),
    "spirals": lambda d: (2, d.n_classes),
    "blobs": lambda d: (d.n_features, d.centers),
    "classification": lambda d: (d.n_features, d.n_classes),
    "regression": lambda d: (d.n_features, 1),
}


@dataclass(frozen=True)
class DataShape:
    """A sample data set's size: ``n_train`` samples of ``input_shape`` to ``n_outputs``
    (classes, or 1 for regression)."""

    n_samples: int
    n_train: int
    input_shape: tuple[int, ...]
    n_outputs: int


def data_shape(spec: JobSpec, upload: Dataset | None = None) -> DataShape | None:
    """The job's data set's shape; None for a 2-D landscape (no samples). An upload's comes
    from its stored row, which the caller passes."""
    data = spec.dataset
    name = data.name  # type: ignore[attr-defined]
    shape: tuple[int, ...]
    if name == "upload":
        if upload is None:
            raise ValueError("an upload's shape needs its dataset row")
        n, shape, outputs = upload.n_samples, (upload.n_features,), upload.n_classes or 1
    elif name in _FIXED:
        n, shape, outputs = _FIXED[name]
        n = min(n, getattr(data, "max_samples", None) or n)
    elif name in _GENERATED:
        features, outputs = _GENERATED[name](data)
        n, shape = data.n_samples, (features,)  # type: ignore[attr-defined]
    else:
        return None
    held_out = _share(n, data.val_fraction) + _share(n, data.test_fraction)  # type: ignore[attr-defined]
    return DataShape(n, max(1, n - held_out), shape, outputs)


def _share(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else min(n - 1, max(1, math.ceil(n * fraction)))


def steps_per_run(spec: JobSpec, shape: DataShape | None) -> int:
    """The most steps any run of the job takes: epochs x steps per epoch (one step per epoch
    for a landscape or a full-batch optimizer, else one per mini-batch)."""
    if shape is None or all(entry.info.full_batch for entry in spec.optimizers):
        return spec.epochs
    return spec.epochs * math.ceil(shape.n_train / spec.batch_size)


def model_parameters(spec: JobSpec, shape: DataShape | None) -> int:
    """Trainable parameters (and batch-norm's affine ones) of the job's model."""
    model = spec.model
    if shape is None or model.name == "point":
        return 2
    inputs, outputs = math.prod(shape.input_shape), shape.n_outputs
    if model.name == "linear":
        return (inputs + 1) * outputs
    if model.name == "mlp":
        widths = [inputs, *model.hidden, outputs]
        linear = sum((a + 1) * b for a, b in pairwise(widths))
        return linear + (2 * sum(model.hidden) if model.norm else 0)
    channels = shape.input_shape[0]
    if model.name == "cnn":  # LeNet-5: both input sizes flatten to 16 x 5 x 5
        return (channels * 25 + 1) * 6 + (6 * 25 + 1) * 16 + 401 * 120 + 121 * 84 + 85 * outputs
    return _resnet(channels, outputs, model.width, model.blocks)


def _resnet(channels: int, outputs: int, width: int, blocks: int) -> int:
    total = channels * width * 9 + 2 * width  # stem convolution and batch norm
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            total += cin * cout * 9 + cout * cout * 9 + 4 * cout
            if stride != 1 or cin != cout:
                total += cin * cout + 2 * cout
            cin = cout
    return total + (cin + 1) * outputs
