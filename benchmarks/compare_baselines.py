"""The plain training loops that benchmarks/compare.py measures optbench against, plus a FLOP
counter and the machine's matmul peak.

- ``lecture_loop`` (a): the lecture's loop, written the way the lecture writes it: a
  ``DataLoader`` over a ``TensorDataset``, ``loss.item()`` and the batch accuracy read every
  step, validation at each epoch end.
- ``tensor_loop`` (b): the best plain loop for data that fit in memory: the data as tensors,
  batches by ``torch.randperm`` index slices, per-step loss and correct predictions kept as
  tensors and read once at the end, validation at each epoch end.

Both train the spec's optimizer entries one after another, each from a copy of one initial
model built after ``torch.manual_seed(seed)`` (as the engine builds it), on the splits the
engine loads, with the engine's batch order (one generator seeded with the seed draws each
epoch's permutation) and ``gd`` as one full-batch step per epoch. So (a), (b) and optbench do
the same arithmetic, and their final validation accuracies agree up to rounding.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from services.spec import JobSpec
from workers.engine import DatasetConfig, ModelConfig, datasets, models
from workers.engine.datasets import Splits

FILE_DATASETS = frozenset({"mnist", "fashion_mnist", "cifar10"})


@dataclass
class LoopResult:
    seconds: float
    samples: int  # training samples processed: steps x batch size, summed over the runs
    final_val_accuracy: dict[str, float]  # per optimizer label


def load_data(spec: JobSpec, data_dir: Path | None) -> Splits:
    """The train/validation/test splits the engine makes for the spec's data set (the same
    translation as workers/adapter.py's ``dataset_config``)."""
    data: Any = spec.dataset
    params = data.model_dump(exclude={"name", "val_fraction", "test_fraction", "seed"})
    if data.name in FILE_DATASETS:
        params["folder"] = str(data_dir)
    config = DatasetConfig(data.name, params, data.val_fraction, data.test_fraction, data.seed)
    return datasets.load(config)


def initial_model(spec: JobSpec, data: Splits) -> nn.Module:
    """The engine's initial model of the first seed."""
    torch.manual_seed(spec.seeds[0])
    config = ModelConfig(spec.model.name, spec.model.model_dump(exclude={"name"}))
    return models.build(config, data.input_shape, data.n_outputs)


def make_optimizer(entry: Any, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.<class>(params, **hyperparameters)`` of a spec entry (``gd`` is SGD)."""
    hyperparameters = {
        k: tuple(v) if isinstance(v, list) else v for k, v in entry.hyperparameters().items()
    }
    optimizer: torch.optim.Optimizer = getattr(torch.optim, entry.info.torch_class)(
        model.parameters(), **hyperparameters
    )
    return optimizer


def lecture_loop(spec: JobSpec, data: Splits) -> LoopResult:
    """(a) The lecture's loop, on the CPU."""
    initial = initial_model(spec, data)
    dataset = TensorDataset(data.x_train, data.y_train)
    samples, accuracies = 0, {}
    started = time.perf_counter()
    for entry in spec.optimizers:
        model = copy.deepcopy(initial)
        optimizer = make_optimizer(entry, model)
        batch_size = len(dataset) if entry.info.full_batch else spec.batch_size
        # shuffle=True, with the engine's seeded order (shuffle=True with generator= would
        # also draw the workers' base seed from that generator, and so shift the order).
        order = RandomSampler(dataset, generator=torch.Generator().manual_seed(spec.seeds[0]))
        loader = DataLoader(dataset, batch_size=batch_size, sampler=order)
        history: dict[str, list[float]] = {"loss": [], "acc": [], "val_loss": [], "val_acc": []}
        for _ in range(spec.epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                output = model(x)
                loss = F.cross_entropy(output, y)
                loss.backward()
                optimizer.step()
                history["loss"].append(loss.item())
                history["acc"].append((output.argmax(dim=1) == y).float().mean().item())
                samples += len(y)
            model.eval()
            with torch.no_grad():
                output = model(data.x_val)
                history["val_loss"].append(F.cross_entropy(output, data.y_val).item())
                history["val_acc"].append(
                    (output.argmax(dim=1) == data.y_val).float().mean().item()
                )
        accuracies[entry.display_label] = history["val_acc"][-1]
    return LoopResult(time.perf_counter() - started, samples, accuracies)


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's index slices in the engine's order; a trailing batch of one sample joins
    the one before, as in the engine."""
    parts = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def tensor_loop(spec: JobSpec, data: Splits, device: str = "cpu") -> LoopResult:
    """(b) The best plain in-memory loop, on ``device``."""
    initial = initial_model(spec, data)
    data = data.to(device)
    n_train = len(data.y_train)
    samples, accuracies = 0, {}
    _synchronize(device)
    started = time.perf_counter()
    for entry in spec.optimizers:
        model = copy.deepcopy(initial).to(device)
        optimizer = make_optimizer(entry, model)
        generator = torch.Generator().manual_seed(spec.seeds[0])
        steps: list[torch.Tensor] = []  # [loss, correct] per step, read at the end
        validation: list[torch.Tensor] = []  # [loss, accuracy] per epoch
        for _ in range(spec.epochs):
            model.train()
            epoch: Sequence[torch.Tensor | None] = (
                [None] if entry.info.full_batch else batches(n_train, spec.batch_size, generator)
            )
            for part in epoch:  # None: the whole training split (gd)
                index = None if part is None else part.to(device)
                x = data.x_train if index is None else data.x_train[index]
                y = data.y_train if index is None else data.y_train[index]
                optimizer.zero_grad(set_to_none=True)
                output = model(x)
                loss = F.cross_entropy(output, y)
                loss.backward()
                optimizer.step()
                steps.append(torch.stack([loss.detach(), (output.argmax(dim=1) == y).sum()]))
                samples += len(y)
            model.eval()
            with torch.no_grad():
                output = model(data.x_val)
                accuracy = (output.argmax(dim=1) == data.y_val).float().mean()
                validation.append(torch.stack([F.cross_entropy(output, data.y_val), accuracy]))
        torch.stack(steps).tolist()  # what a real loop would keep or plot
        accuracies[entry.display_label] = torch.stack(validation).tolist()[-1][1]
    _synchronize(device)
    return LoopResult(time.perf_counter() - started, samples, accuracies)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Multiply-adds of one sample's forward pass through each Linear and Conv2d layer, in the
    order they run (activations, pooling and the loss are left out: a small share)."""
    macs: list[int] = []

    def count(module: nn.Module, _: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)
        elif isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size)
            macs.append(output.numel() * kernel * module.in_channels // module.groups)

    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    handles = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train()
    return macs


def train_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one training sample through the Linear and Conv2d layers: 2 x multiply-adds
    forward, as many for the weight gradients and as many for the input gradients, which the
    first layer does not compute (its input is the data): about 3 x forward."""
    macs = layer_macs(model, input_shape)
    return 2 * (3 * sum(macs) - macs[0])


def matmul_gflops(size: int = 2048, device: str = "cpu", repeats: int = 10) -> float:
    """The best of ``repeats`` float32 ``size x size`` matmuls, in GFLOP/s, with torch's
    default threads: the machine's practical peak for dense float32 work."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9
