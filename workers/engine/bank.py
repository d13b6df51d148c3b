"""Every member's parameters as rows of one (K, N) matrix, and their gradients.

Row k holds member k's N parameters in ``named_parameters()`` order, and a gradient matrix of
the same shape holds their gradients. A layer reads its weights as a strided (K, ...) view of
the matrix (``stacked``), so an optimizer update of row k is seen by the next forward without
any copy, and one ``backward`` fills every member's gradient in place (the views' ``.grad``
are views of the gradient matrix). Member k's optimizer updates ``member_parameters(k)``:
its whole row as one tensor, or one view per parameter.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

# Backward adds into the preassigned gradient views in place, which is what we want; torch
# warns only because those views are strided like the (non-contiguous) parameter views.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")


class ParameterBank:
    """Every member's parameters as rows of one (K, N) matrix, and their gradients."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        first = members[0]
        self.k = len(members)
        self.shapes = {name: p.shape for name, p in first.named_parameters()}
        self.values = torch.stack(
            [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in members]
        )
        self.grads = torch.zeros_like(self.values)
        self._offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = shape.numel()
            self._offsets[name] = (offset, offset + size)
            offset += size
        self._stacked: dict[str, torch.Tensor] = {}

    def stacked(self, name: str) -> torch.Tensor:
        """Parameter ``name`` of all members, (K, *shape): a leaf view into the bank."""
        if name not in self._stacked:
            start, end = self._offsets[name]
            shape = (self.k, *self.shapes[name])
            view = self.values[:, start:end].view(shape).requires_grad_(True)
            view.grad = self.grads[:, start:end].view(shape)
            self._stacked[name] = view
        return self._stacked[name]

    def member_parameters(self, k: int, flat: bool) -> list[torch.Tensor]:
        """What member k's optimizer updates: its whole row as one tensor (``flat``: for
        element-wise update rules, one kernel per step) or one view per parameter."""
        if flat:
            return [_leaf_view(self.values[k], self.grads[k])]
        return [
            _leaf_view(
                self.values[k, start:end].view(self.shapes[name]),
                self.grads[k, start:end].view(self.shapes[name]),
            )
            for name, (start, end) in self._offsets.items()
        ]

    def member_named_parameters(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters, one leaf view each under its module name (a grouped entry's
        optimizers each take theirs: member k's own slices of the bank, so an optimizer over
        whole matrices, Muon's, steps each member's matrix on its own)."""
        return {
            name: _leaf_view(
                self.values[k, start:end].view(self.shapes[name]),
                self.grads[k, start:end].view(self.shapes[name]),
            )
            for name, (start, end) in self._offsets.items()
        }

    def member_values(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters under their module names: copies, not views of the bank."""
        return {
            name: self.values[k, start:end].view(self.shapes[name]).clone()
            for name, (start, end) in self._offsets.items()
        }

    def zero_grad(self) -> None:
        self.grads.zero_()

    def grad_norms(self) -> torch.Tensor:
        """Each member's gradient L2 norm, (K,)."""
        return torch.linalg.vector_norm(self.grads, dim=1)


def _leaf_view(value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    leaf = value.detach().requires_grad_(True)  # same storage: updates land in the bank
    leaf.grad = grad
    return leaf
