"""The members of a group: K models (or points) that one trainer steps together.

One interface for three implementations:

- ``ModuleMember``: one ``nn.Module`` on its own (K = 1). Anything a module can hold trains
  this way: dropout (its masks drawn from the torch RNG, seeded with the run's seed), LBFGS
  (whose closure re-evaluates the loss), layers without a fused form.
- ``FusedMembers``: K modules of one architecture as one network over a parameter bank
  (workers/engine/fused_net.py): one forward/backward for all, each member's optimizer
  updating its row of the bank in place.
- ``PointMembers``: K points of a 2-D landscape, rows of a (K, 2) bank.

Each gives the members' outputs for an input, their gradient norms, what member k's
optimizer updates, and member k's state (``state_dict``) under the names its own module
would use, so a checkpoint of a member resumes in any group of the same ``layout``. A member
that leaves a group (diverged, pruned) stays in the bank untouched: the others go on with no
copy of their parameters, and its rows are simply no longer stepped or recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workers.engine import fused_net
from workers.engine.bank import ParameterBank
from workers.engine.checkpoint import ALONE, FUSED, POINT
from workers.engine.fused_layers import Act

# Update rules that treat every element on its own, so a member's parameters can be one flat
# tensor (one kernel per step). Others (Adafactor factors matrices) get one view per tensor.
ELEMENTWISE = frozenset(
    {"SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop"}
    | {"Rprop", "ASGD"}
)


class Members:
    """The interface; ``k`` members, checkpointed in ``layout``."""

    k: int
    layout: str

    def forward(self, act: Act) -> torch.Tensor:
        """The members' outputs, (K, B, outputs); a landscape's values at its points, (K,)."""
        raise NotImplementedError

    def parameters(self, k: int, torch_class: str) -> list[torch.Tensor]:
        """What member k's optimizer of ``torch_class`` updates."""
        raise NotImplementedError

    def named_parameters(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters under their module names, one tensor each (what a grouped
        entry's optimizers split between them)."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        raise NotImplementedError

    def grad_norms(self) -> torch.Tensor:
        """Each member's gradient L2 norm, (K,)."""
        raise NotImplementedError

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers as its own module's ``state_dict``."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> None: ...

    def positions(self) -> torch.Tensor | None:
        """Landscapes: the points (K, 2) before a step; None elsewhere."""
        return None


class ModuleMember(Members):
    """One module on its own."""

    k, layout = 1, ALONE

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._parameters: list[torch.Tensor] = list(module.parameters())

    def forward(self, act: Act) -> torch.Tensor:
        return self.module(act[0]).unsqueeze(0)

    def parameters(self, k: int, torch_class: str) -> list[torch.Tensor]:
        return self._parameters

    def named_parameters(self, k: int) -> dict[str, torch.Tensor]:
        return dict(self.module.named_parameters())

    def zero_grad(self) -> None:
        for parameter in self._parameters:
            parameter.grad = None

    def grad_norms(self) -> torch.Tensor:
        grads = [p.grad for p in self._parameters if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).unsqueeze(0)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


class _BankMembers(Members):
    """Members whose parameters are the rows of one ``ParameterBank``."""

    bank: ParameterBank

    def parameters(self, k: int, torch_class: str) -> list[torch.Tensor]:
        return self.bank.member_parameters(k, flat=torch_class in ELEMENTWISE)

    def named_parameters(self, k: int) -> dict[str, torch.Tensor]:
        return self.bank.member_named_parameters(k)

    def zero_grad(self) -> None:
        self.bank.zero_grad()

    def grad_norms(self) -> torch.Tensor:
        return self.bank.grad_norms()


class FusedMembers(_BankMembers):
    """K modules of one architecture, fused (checked on ``probe`` against their own forward)."""

    layout = FUSED

    def __init__(self, modules: Sequence[nn.Module], probe: torch.Tensor) -> None:
        self.net = fused_net.fuse(modules, probe)
        self.bank, self.k = self.net.bank, len(modules)

    def forward(self, act: Act) -> torch.Tensor:
        return self.net(act)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return self.net.member_state_dict(k)

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)


class _Point(nn.Module):
    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.point = nn.Parameter(start.clone())


class PointMembers(_BankMembers):
    """K points (x, y) of a landscape ``function`` (which takes a (2, K) tensor)."""

    layout = POINT

    def __init__(
        self,
        function: Callable[[torch.Tensor], torch.Tensor],
        starts: Sequence[torch.Tensor],
    ) -> None:
        self.function, self.k = function, len(starts)
        self.bank = ParameterBank([_Point(start) for start in starts])
        self.points = self.bank.stacked("point")  # (K, 2): a leaf view into the bank

    def forward(self, act: Act) -> torch.Tensor:
        return self.function(self.points.T)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return self.bank.member_values(k)

    def positions(self) -> torch.Tensor:
        return self.points.detach().clone()

    def values_at(self) -> torch.Tensor:
        """The function at the points now, (K,)."""
        with torch.no_grad():
            return self.function(self.points.T)


def point_start(state: dict[str, Any] | None, start: Sequence[float]) -> torch.Tensor:
    """A point's start: its checkpointed position, or the landscape's start."""
    if state is not None:
        return state["point"].to(torch.float64)
    return torch.tensor(start, dtype=torch.float64)
