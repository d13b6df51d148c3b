"""Whether a plugin optimizer class can step per member in a fused group: a probe, run once
per process (workers/engine/optimizer_classes.py resolves and describes the classes)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from workers.engine.optimizer_classes import has_modes, resolve

PROBE_STEPS = 3


@functools.cache
def fusion_blocker(torch_class: str) -> str | None:
    """Why runs of the plugin ``torch_class`` train alone, or None where they fuse.

    In a fused group each member's optimizer updates views of the member's rows of one
    parameter bank, one view per parameter tensor, with its shape (workers/engine/members.py):
    a per-matrix preconditioner (SOAP, Shampoo) sees each matrix as it would alone. That is
    right only for an update that writes the views in place and reads no other member's
    values; nothing in a class says so, so it is checked here once per process: two small
    members, three steps (with an eval/train swap between steps where the class has modes),
    fused and alone, equal to 1e-12 in float64, or the runs train alone and say why.
    ``torch.optim``'s classes are not probed (their fused paths are tested)."""
    if ":" not in torch_class:
        return None
    from torch import nn

    from workers.engine.bank import ParameterBank

    cls: Callable[..., torch.optim.Optimizer] = resolve(torch_class)  # its defaults apply
    generator = torch.Generator().manual_seed(0)

    def module() -> nn.Module:
        layers = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
        with torch.no_grad():
            for parameter in layers.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        return layers

    members = [module(), module()]
    bank = ParameterBank(members)
    alone = [[p.detach().clone().requires_grad_(True) for p in m.parameters()] for m in members]
    try:
        fused_optimizers = [cls(bank.member_parameters(k, flat=False)) for k in range(2)]
        alone_optimizers = [cls(params) for params in alone]
        for optimizer in [*fused_optimizers, *alone_optimizers]:
            if has_modes(optimizer):
                optimizer.train()  # type: ignore[attr-defined]
        for step in range(PROBE_STEPS):
            grads = torch.randn(bank.grads.shape, generator=generator, dtype=torch.float64)
            bank.grads.copy_(grads)
            for k in range(2):
                offset = 0
                for parameter in alone[k]:
                    size = parameter.numel()
                    parameter.grad = grads[k, offset : offset + size].view(parameter.shape).clone()
                    offset += size
                for optimizer in (fused_optimizers[k], alone_optimizers[k]):
                    torch.manual_seed(step)  # randomised updates draw alike on both sides
                    optimizer.step()
                    if has_modes(optimizer):
                        optimizer.eval()  # type: ignore[attr-defined]
                        optimizer.train()  # type: ignore[attr-defined]
    except Exception as error:  # the class cannot step these parameters at all
        return f"{torch_class} failed a probe of per-member steps ({type(error).__name__}: {error})"
    for k in range(2):
        expected = torch.cat([p.detach().reshape(-1) for p in alone[k]])
        if not torch.allclose(bank.values[k], expected, rtol=0.0, atol=1e-12):
            return (
                f"{torch_class} does not update a member's parameters in place as it does "
                "alone (checked on a probe), so it cannot step per member in a fused group"
            )
    return None
