"""Building the fused network of K members of one architecture: each module translated into
its fused layer (workers/engine/fused_layers.py) over the members' ``ParameterBank``, and the
result checked against the members' own forward before it is used."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workers.engine.bank import ParameterBank
from workers.engine.fused_layers import (
    SHARED,
    Act,
    BatchNorm,
    Chain,
    Conv2d,
    Elementwise,
    Flatten,
    Layer,
    LayerNorm,
    Linear,
    NotFusable,
    Pool,
    Residual,
    stacked,
)
from workers.engine.models import ACTIVATIONS, _Block

_ELEMENTWISE = (*ACTIVATIONS.values(), nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class FusedNet:
    """The fused forward of K members of one architecture, over their ``ParameterBank``."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        self.k = len(members)
        self.bank = ParameterBank(members)
        self.batch_norms: dict[str, BatchNorm] = {}  # by module prefix: running statistics
        self.root = self._fuse("", list(members))

    def __call__(self, act: Act) -> torch.Tensor:
        """The members' outputs, (K, B, outputs)."""
        return stacked(self.root(act), self.k)

    def train(self, mode: bool = True) -> None:
        pending: list[Layer] = [self.root]
        while pending:
            layer = pending.pop()
            layer.training = mode
            pending.extend(layer.children())

    def eval(self) -> None:
        self.train(False)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers as its own module's ``state_dict`` (copies)."""
        state = self.bank.member_values(k)
        for prefix, layer in self.batch_norms.items():
            if layer.running is not None:
                state[f"{prefix}running_mean"] = layer.running[0][k].clone()
                state[f"{prefix}running_var"] = layer.running[1][k].clone()
                state[f"{prefix}num_batches_tracked"] = torch.tensor(layer.batches_tracked)
        return state

    def _param(self, prefix: str, name: str) -> torch.Tensor | None:
        full = f"{prefix}{name}"
        return self.bank.stacked(full) if full in self.bank.shapes else None

    def _fuse(self, prefix: str, modules: list[nn.Module]) -> Layer:
        module, k = modules[0], self.k
        kind: type[nn.Module] = type(module)
        if isinstance(module, nn.Sequential):
            return Chain(
                [
                    self._fuse(f"{prefix}{name}.", [m[int(name)] for m in modules])  # type: ignore[index]
                    for name, _ in module.named_children()
                ]
            )
        if isinstance(module, _Block):
            body = self._fuse(f"{prefix}body.", [m.body for m in modules])  # type: ignore[misc]
            skip = self._fuse(f"{prefix}skip.", [m.skip for m in modules])  # type: ignore[misc]
            return Residual(body, skip, k)
        if isinstance(module, nn.Linear):
            return Linear(self._param(prefix, "weight"), self._param(prefix, "bias"))  # type: ignore[arg-type]
        if isinstance(module, nn.Conv2d):
            return Conv2d(module, self._param(prefix, "weight"), self._param(prefix, "bias"))  # type: ignore[arg-type]
        if isinstance(module, nn.LayerNorm):
            return LayerNorm(module, self._param(prefix, "weight"), self._param(prefix, "bias"), k)
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            norm = BatchNorm(
                module,
                modules,  # type: ignore[arg-type]
                self._param(prefix, "weight"),
                self._param(prefix, "bias"),
                k,
            )
            self.batch_norms[prefix] = norm
            return norm
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            return Flatten()
        if isinstance(module, nn.Dropout) and module.p == 0:
            return Elementwise(nn.Identity())
        if isinstance(module, nn.Dropout):
            raise NotFusable(
                "dropout: each run draws its masks from its own random stream, which a fused "
                "group cannot reproduce"
            )
        if kind in _ELEMENTWISE:
            return Elementwise(module)
        if isinstance(module, _POOLS):
            return Pool(module)
        raise NotFusable(f"layer {kind.__name__} has no fused form")


def fuse(members: Sequence[nn.Module], probe: torch.Tensor) -> FusedNet:
    """The fused network of ``members``, checked on ``probe`` (a few input samples): its
    outputs must equal each member's own (in eval mode), or the model is ``NotFusable``."""
    net = FusedNet(members)
    with torch.no_grad():
        net.eval()
        for member in members:
            member.eval()
        try:
            fused = net((probe, SHARED))
        except (RuntimeError, NotFusable) as error:
            raise NotFusable(f"the fused forward failed ({error})") from error
        expected = torch.stack([member(probe) for member in members])
        net.train()
        for member in members:
            member.train()
    scale = float(expected.abs().max()) + 1.0
    if fused.shape != expected.shape or not torch.allclose(
        fused, expected, rtol=1e-3, atol=1e-4 * scale
    ):
        raise NotFusable("the fused forward does not reproduce the model's outputs")
    return net


def activation_elements(model: nn.Module, probe: torch.Tensor) -> int:
    """How many activation values one sample produces in ``model`` (every leaf layer's
    output), which is what a fused step streams through memory per member and sample."""
    counted: list[int] = []
    leaves = [module for module in model.modules() if not any(module.children())]
    handles = [
        leaf.register_forward_hook(lambda _m, _i, output: counted.append(output.numel()))
        for leaf in leaves
    ]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return sum(counted) // len(probe)
