"""A job's compute, estimated from its spec without torch (the API process has none):
``runs x steps x samples per step x training FLOPs per sample``, checked at submission
against ``OPTBENCH_MAX_JOB_FLOPS`` (services/limits.py).

A step counts at least ``STEP_FLOOR_FLOPS``: its fixed cost (autograd, the optimizer's
update, recording the metrics, Python) does not shrink with the batch. A step of a 4-3
linear model at batch 1 took 3 ms on one core of the 2-core VM under load, the time of about
1e7 FLOP at the 0.5-7 GFLOP/s the models trained at there: without the floor, 256 runs of
10,000,000 steps at batch 1 (the limits of runs and steps) would count as 1e14 FLOP, a
fraction of the limit, for weeks of a core.

Training FLOPs per sample count the multiply-adds of the model's linear and convolution
layers, two FLOPs each, as ``torch.utils.flop_counter`` does (the workers' part planner uses
it; tests/unit/test_compute.py checks these figures against it): the forward pass, the
gradient of every weight (as much again) and the gradient of every layer's input but the
first's (the data needs none). Activations, normalisation and pooling are not counted (a
few percent for these models), nor is evaluation on the held-out splits (one forward pass
over them per epoch). Steps and samples per step come from services/sizes.py: every
mini-batch full (an upper bound; a full-batch optimizer's single step per epoch covers the
same samples as an epoch of mini-batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from services.sizes import DataShape, steps_per_run
from services.spec import JobSpec

STEP_FLOOR_FLOPS = 10_000_000


@dataclass(frozen=True)
class ComputeEstimate:
    """``runs x steps x per_step`` of one job: ``per_step`` is ``samples x
    flops_per_sample``, or ``STEP_FLOOR_FLOPS`` when that is more."""

    runs: int
    steps: int  # per run, the most any of its runs takes
    samples: int  # per step
    flops_per_sample: int  # forward and backward through the model

    @property
    def floored(self) -> bool:
        """Whether the step's fixed cost is more than its samples' FLOPs."""
        return self.samples * self.flops_per_sample < STEP_FLOOR_FLOPS

    @property
    def per_step(self) -> int:
        return max(self.samples * self.flops_per_sample, STEP_FLOOR_FLOPS)

    @property
    def total(self) -> int:
        return self.runs * self.steps * self.per_step


def estimate(spec: JobSpec, shape: DataShape | None) -> ComputeEstimate:
    """The job's compute estimate; a landscape's step (no data set, a 2-D point) counts
    only its fixed cost."""
    runs = len(spec.optimizers) * len(spec.seeds)
    steps = steps_per_run(spec, shape)
    if shape is None or spec.model.name == "point":
        return ComputeEstimate(runs, steps, 1, 0)
    full_batch = all(entry.info.full_batch for entry in spec.optimizers)
    samples = shape.n_train if full_batch else min(spec.batch_size, shape.n_train)
    return ComputeEstimate(runs, steps, samples, training_flops(spec, shape))


def training_flops(spec: JobSpec, shape: DataShape) -> int:
    """FLOPs of one sample's forward and backward pass (see the module)."""
    layers = multiply_adds(spec, shape)
    return 2 * (3 * sum(layers) - layers[0])


def multiply_adds(spec: JobSpec, shape: DataShape) -> list[int]:
    """Multiply-adds of each linear or convolution layer for one sample, input layer first
    (the layers of workers/engine/models.py)."""
    model = spec.model
    inputs, outputs = math.prod(shape.input_shape), shape.n_outputs
    if model.name == "linear":
        return [inputs * outputs]
    if model.name == "mlp":
        return [a * b for a, b in pairwise([inputs, *model.hidden, outputs])]
    channels, height, _ = shape.input_shape
    if model.name == "cnn":  # LeNet-5: 28 x 28 after the first convolution either way
        convolutions = [28 * 28 * 6 * 25 * channels, 10 * 10 * 16 * 6 * 25]
        return [*convolutions, 400 * 120, 120 * 84, 84 * outputs]
    if model.name == "resnet":
        return _resnet(channels, height, outputs, model.width, model.blocks)
    raise ValueError(f"no FLOP count for the {model.name} model")


def _resnet(channels: int, size: int, outputs: int, width: int, blocks: int) -> list[int]:
    layers = [size * size * width * channels * 9]  # the stem convolution
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for index in range(blocks):
            if stage > 0 and index == 0:
                size = (size - 1) // 2 + 1  # a 3x3 convolution of stride 2, padding 1
                layers.append(size * size * cin * cout)  # the 1x1 skip convolution
            elif cin != cout:
                layers.append(size * size * cin * cout)
            layers += [size * size * cout * cin * 9, size * size * cout * cout * 9]
            cin = cout
    return [*layers, cin * outputs]
