"""K copies of one architecture computed as one network: the layers of a fused group.

The members' parameters live in one ``ParameterBank`` (workers/engine/bank.py): a (K, N)
matrix, a row per member. Each layer here reads its weights as a strided (K, ...) view of
that matrix; workers/engine/fused_net.py builds the layers of a model and checks them.

Activations travel in one of two layouts:

- ``SHARED``: (B, ...), one tensor for every member (the input, when all members see the
  same batch, up to the first layer with weights);
- ``STACKED``: (K, B, ...), member first and contiguous per member.

A fully connected layer is one batched matrix multiply with a backward of its own
(``_MemberLinear``); a shared input is read by every member through a stride-0 view instead
of being copied once per member. Pooling and
activations run once over all members. Convolutions run member by member on contiguous
slices: measured on a 2-core CPU (torch 2.13), one grouped convolution over K*C channels
was 2x slower than K separate ones (LeNet's second layer, batch 128: 29 ms vs 15 ms forward
and backward), and a wide convolution of a shared input 1.3x slower. Batch norm keeps each
member's running statistics as rows of one matrix. A layer without a fused form here (or
dropout, whose masks each run draws from its own random stream) makes the model
``NotFusable``; its runs then train one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SHARED, STACKED = "shared", "stacked"
Act = tuple[torch.Tensor, str]  # an activation and its layout


class NotFusable(Exception):
    """The model has a layer this module cannot fuse; the message says which and why."""


# --- layouts -------------------------------------------------------------------------------


def stacked(act: Act, k: int) -> torch.Tensor:
    """The activation as (K, B, ...)."""
    x, layout = act
    return x if layout == STACKED else x.unsqueeze(0).expand(k, *x.shape)


def per_member(act: Act, k: int) -> tuple[torch.Tensor, ...]:
    """Each member's (B, ...) activation; one backward node for all (unbind, not indexing)."""
    x, layout = act
    return (x,) * k if layout == SHARED else x.unbind(0)


def over_all(function: Callable[[torch.Tensor], torch.Tensor], act: Act) -> Act:
    """A per-sample function (pooling, ...) applied once to every member's samples."""
    x, layout = act
    if layout == SHARED:
        return function(x), SHARED
    k, b = x.shape[:2]
    y = function(x.reshape(k * b, *x.shape[2:]))
    return y.view(k, b, *y.shape[1:]), STACKED


# --- layers --------------------------------------------------------------------------------


class Layer:
    training = True

    def __call__(self, act: Act) -> Act:
        raise NotImplementedError

    def children(self) -> Sequence[Layer]:
        return ()


class Chain(Layer):
    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    def __call__(self, act: Act) -> Act:
        for layer in self.layers:
            act = layer(act)
        return act

    def children(self) -> Sequence[Layer]:
        return self.layers


class Elementwise(Layer):
    """Activations and other stateless per-element functions: any layout as it is."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, act: Act) -> Act:
        return self.module(act[0]), act[1]


class Pool(Layer):
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, act: Act) -> Act:
        return over_all(self.module, act)


class Flatten(Layer):
    def __call__(self, act: Act) -> Act:
        x, layout = act
        return (x.flatten(1), SHARED) if layout == SHARED else (x.flatten(2), STACKED)


# A member's multiply this large (batch x in x out) runs faster as K separate BLAS calls than
# as one batched multiply on a CPU: measured (torch 2.13, 1 thread), K=7, batch 128, 256x256,
# forward and backward 7.0 ms vs 8.1 ms; at batch 64, 64x128 the batched one wins (0.51 ms vs
# 0.54 ms).
CPU_LOOP_MULTIPLY_ADDS = 2**21


class _MemberLinear(torch.autograd.Function):
    """Each member's ``x @ weight.T + bias`` over stacked inputs (K, B, in), with a backward
    that computes each weight gradient as ``grad.T @ x`` (K, out, in), as ``nn.Linear``'s own
    backward does, rather than autograd's ``x.T @ grad`` of the transposed operand followed
    by a transposing copy: measured 57 µs against 178 µs for digits' second layer (K=7, batch
    64, 128x10; 2-core AMD EPYC VM, torch 2.13, one thread). A shared input (B, in) is read
    through a stride-0 expand, never copied per member, and gets no gradient (it is data)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        k = weight.shape[0]
        shared = x.dim() == 2
        xs = x.expand(k, *x.shape) if shared else x
        ctx.save_for_backward(xs, weight)
        ctx.shared, ctx.has_bias = shared, bias is not None  # type: ignore[attr-defined]
        if bias is None:
            return torch.bmm(xs, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), xs, weight.transpose(1, 2))

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        xs, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = None
        if needs[0]:
            grad_x = torch.bmm(grad, weight)
            if ctx.shared:  # type: ignore[attr-defined]
                grad_x = grad_x.sum(0)
        grad_weight = torch.bmm(grad.transpose(1, 2), xs) if needs[1] else None
        grad_bias = grad.sum(1) if ctx.has_bias and needs[2] else None  # type: ignore[attr-defined]
        return grad_x, grad_weight, grad_bias


class Linear(Layer):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias  # (K, out, in), (K, out)

    def __call__(self, act: Act) -> Act:
        k, out, width = self.weight.shape
        x, layout = act
        if layout == SHARED and x.dim() == 2:
            return _MemberLinear.apply(x, self.weight, self.bias), STACKED
        x = stacked(act, k)
        if x.device.type == "cpu" and x.shape[1] * width * out >= CPU_LOOP_MULTIPLY_ADDS:
            biases = self.bias.unbind(0) if self.bias is not None else (None,) * k
            members = zip(x.unbind(0), self.weight.unbind(0), biases, strict=True)
            return torch.stack([F.linear(xi, wi, bi) for xi, wi, bi in members]), STACKED
        return _MemberLinear.apply(x, self.weight, self.bias), STACKED


class Conv2d(Layer):
    def __init__(self, module: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        if module.groups != 1 or module.padding_mode != "zeros":
            raise NotFusable("a grouped or non-zero-padded convolution")
        self.weight, self.bias = weight, bias  # (K, out, C, kh, kw), (K, out)
        self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation

    def __call__(self, act: Act) -> Act:
        k = self.weight.shape[0]
        weights, biases = (
            self.weight.unbind(0),
            (self.bias.unbind(0) if self.bias is not None else (None,) * k),
        )
        outputs = [
            F.conv2d(x, w, b, self.stride, self.padding, self.dilation)
            for x, w, b in zip(per_member(act, k), weights, biases, strict=True)
        ]
        return torch.stack(outputs), STACKED


class LayerNorm(Layer):
    def __init__(
        self, module: nn.LayerNorm, weight: torch.Tensor | None, bias: torch.Tensor | None, k: int
    ) -> None:
        if len(module.normalized_shape) != 1:
            raise NotFusable("layer norm over more than the last dimension")
        self.shape, self.eps, self.k = module.normalized_shape, module.eps, k
        self.weight, self.bias = weight, bias  # (K, F)

    def __call__(self, act: Act) -> Act:
        y = F.layer_norm(stacked(act, self.k), self.shape, eps=self.eps)
        if self.weight is not None:
            y = y * self.weight.unsqueeze(1)
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y, STACKED


class BatchNorm(Layer):
    """Batch norm of each member, with its running statistics as row k of (K, C) matrices."""

    def __init__(
        self,
        module: nn.modules.batchnorm._BatchNorm,
        members: Sequence[nn.modules.batchnorm._BatchNorm],
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        k: int,
    ) -> None:
        self.k, self.eps, self.momentum = k, module.eps, module.momentum
        self.weight, self.bias = weight, bias  # (K, C)
        self.running: tuple[torch.Tensor, torch.Tensor] | None = None
        if module.track_running_stats:
            self.running = (
                torch.stack([m.running_mean for m in members]),  # type: ignore[misc]
                torch.stack([m.running_var for m in members]),  # type: ignore[misc]
            )
        self.batches_tracked = int(module.num_batches_tracked or 0)

    def __call__(self, act: Act) -> Act:
        # As nn.BatchNorm does: a cumulative average when momentum is None.
        factor = 0.0
        if self.training and self.running is not None:
            self.batches_tracked += 1
            factor = 1.0 / self.batches_tracked if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running is None
        none = (None,) * self.k
        means, variances = (r.unbind(0) for r in self.running) if self.running else (none, none)
        weights = self.weight.unbind(0) if self.weight is not None else none
        biases = self.bias.unbind(0) if self.bias is not None else none
        members = zip(per_member(act, self.k), means, variances, weights, biases, strict=True)
        outputs = [
            F.batch_norm(x, mean, var, w, b, use_batch_stats, factor, self.eps)
            for x, mean, var, w, b in members
        ]
        return torch.stack(outputs), STACKED


class Residual(Layer):
    """workers.engine.models._Block: relu(body(x) + skip(x))."""

    def __init__(self, body: Layer, skip: Layer, k: int) -> None:
        self.body, self.skip, self.k = body, skip, k

    def __call__(self, act: Act) -> Act:
        total = stacked(self.body(act), self.k) + stacked(self.skip(act), self.k)
        return torch.relu(total), STACKED

    def children(self) -> Sequence[Layer]:
        return (self.body, self.skip)
