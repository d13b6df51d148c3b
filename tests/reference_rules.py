"""Reference update rules: the lecture's optimizer equations on plain tensors.

Each rule is a pure function ``step(theta, grad, state, **hyperparameters) -> (theta, state)``
for one parameter tensor: it reads ``state`` (a plain dict of tensors, ``{}`` before the first
step) and returns the new parameter and the new state without modifying its inputs. No
``torch.optim`` code is used, so ``tests/unit/test_reference_rules.py`` can check torch.optim
against these equations step by step.

The rules are written in the lecture's form, which follows Ruder, "An overview of gradient
descent optimization algorithms" (2016); the lecture does not write out NAG and AdaDelta, so
those follow Ruder. Where PyTorch's form differs, the torch-equivalent variant or conversion
sits next to the rule and the difference is stated in its docstring and in
``docs/optimizers.md``:

- SGD/GD: identical (``weight_decay`` adds ``lambda * theta`` to the gradient in both).
- Momentum: lecture ``v`` = ``lr * momentum_buffer`` of torch (exact while ``lr`` is constant).
- NAG: torch's parameter is the lecture's look-ahead point ``theta - gamma * v``.
- Adagrad, RMSProp, Adam: the lecture puts epsilon inside the square root, torch outside
  (``eps_inside_sqrt=False`` gives torch's form).
- AdaDelta: identical for ``lr=1``; torch's ``lr`` scales the step but not the update average.
"""

from __future__ import annotations

import torch
from torch import Tensor

State = dict[str, Tensor]


def sgd_step(
    theta: Tensor, grad: Tensor, state: State, *, lr: float, weight_decay: float = 0.0
) -> tuple[Tensor, State]:
    """GD / SGD: ``theta <- theta - lr * (g + weight_decay * theta)``.

    GD and SGD share this rule; they differ only in which data the gradient ``g`` comes from
    (the whole training split for GD, a mini-batch for SGD).
    """
    g = grad + weight_decay * theta
    return theta - lr * g, dict(state)


def momentum_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    lr: float,
    gamma: float,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[Tensor, State]:
    """Momentum (lecture): ``v_t = gamma * v_{t-1} + lr * g_t``, ``theta <- theta - v_t``.

    ``dampening`` (tau) is torch's extension: ``v_t = gamma * v_{t-1} + (1 - tau) * lr * g_t``,
    except that, as in torch, the first step is not dampened (``v_1 = lr * g_1``).

    torch.optim.SGD keeps ``buf`` without the learning rate and steps ``theta -= lr * buf``;
    while ``lr`` is constant, ``v = lr * buf`` at every step (see :func:`torch_sgd_step`).
    """
    g = grad + weight_decay * theta
    v = gamma * state["v"] + (1.0 - dampening) * lr * g if "v" in state else lr * g
    return theta - v, {"v": v}


def nag_step(
    theta: Tensor, lookahead_grad: Tensor, state: State, *, lr: float, gamma: float
) -> tuple[Tensor, State]:
    """NAG (Ruder's look-ahead form): the gradient is taken at the look-ahead point.

    ``v_t = gamma * v_{t-1} + lr * grad_J(theta - gamma * v_{t-1})``, ``theta <- theta - v_t``.

    ``lookahead_grad`` is ``grad_J`` evaluated at :func:`nag_lookahead` ``(theta, state)``
    (for every parameter tensor at once when the loss has several). torch.optim.SGD with
    ``nesterov=True`` tracks that look-ahead point instead of ``theta``: its parameter is
    ``theta - gamma * v`` and its momentum buffer is ``v / lr``.
    """
    v = gamma * state.get("v", torch.zeros_like(theta)) + lr * lookahead_grad
    return theta - v, {"v": v}


def nag_lookahead(theta: Tensor, state: State, *, gamma: float) -> Tensor:
    """The look-ahead point ``theta - gamma * v`` of :func:`nag_step`: torch's NAG parameter.

    Substituting ``p = theta - gamma * v`` and ``v = lr * buf`` into the lecture's NAG gives
    ``buf_t = gamma * buf_{t-1} + g(p_{t-1})`` and
    ``p_t = p_{t-1} - lr * (g(p_{t-1}) + gamma * buf_t)``, which is torch's rule; both start at
    ``p_0 = theta_0`` because ``v_0 = 0``.
    """
    return theta - gamma * state.get("v", torch.zeros_like(theta))


def torch_sgd_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[Tensor, State]:
    """torch.optim.SGD's form, written out: the buffer holds gradients, not steps.

    ``g = grad + weight_decay * theta``; ``buf_1 = g_1`` (no dampening on the first step),
    ``buf_t = momentum * buf_{t-1} + (1 - dampening) * g_t``; the step direction is ``buf`` or,
    with ``nesterov``, ``g + momentum * buf``; ``theta <- theta - lr * direction``.
    """
    g = grad + weight_decay * theta
    if momentum == 0.0:
        return theta - lr * g, dict(state)
    buf = momentum * state["buf"] + (1.0 - dampening) * g if "buf" in state else g.clone()
    direction = g + momentum * buf if nesterov else buf
    return theta - lr * direction, {"buf": buf}


def adagrad_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    lr: float,
    eps: float = 1e-10,
    eps_inside_sqrt: bool = True,
) -> tuple[Tensor, State]:
    """Adagrad: ``G_t = G_{t-1} + g_t^2``, ``theta <- theta - lr * g_t / sqrt(G_t + eps)``.

    With ``eps_inside_sqrt=False`` the denominator is torch's ``sqrt(G_t) + eps``.
    """
    big_g = state.get("G", torch.zeros_like(theta)) + grad * grad
    denom = (big_g + eps).sqrt() if eps_inside_sqrt else big_g.sqrt() + eps
    return theta - lr * grad / denom, {"G": big_g}


def rmsprop_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    lr: float,
    gamma: float = 0.9,
    eps: float = 1e-8,
    eps_inside_sqrt: bool = True,
) -> tuple[Tensor, State]:
    """RMSProp: ``E[g^2]_t = gamma * E[g^2]_{t-1} + (1 - gamma) * g_t^2``,
    ``theta <- theta - lr * g_t / sqrt(E[g^2]_t + eps)``.

    torch calls ``gamma`` ``alpha`` (default 0.99); ``eps_inside_sqrt=False`` gives torch's
    denominator ``sqrt(E[g^2]_t) + eps``.
    """
    sq = gamma * state.get("Eg2", torch.zeros_like(theta)) + (1.0 - gamma) * grad * grad
    denom = (sq + eps).sqrt() if eps_inside_sqrt else sq.sqrt() + eps
    return theta - lr * grad / denom, {"Eg2": sq}


def adadelta_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    rho: float = 0.9,
    eps: float = 1e-6,
    lr: float = 1.0,
) -> tuple[Tensor, State]:
    """AdaDelta (Zeiler 2012, as in Ruder), with ``RMS[x] = sqrt(E[x^2] + eps)``:

    ``E[g^2]_t = rho * E[g^2]_{t-1} + (1 - rho) * g_t^2``,
    ``dtheta_t = -RMS[dtheta]_{t-1} / RMS[g]_t * g_t``,
    ``E[dtheta^2]_t = rho * E[dtheta^2]_{t-1} + (1 - rho) * dtheta_t^2``,
    ``theta <- theta + lr * dtheta_t``.

    The textbook rule has no learning rate (``lr=1``). torch's ``lr`` scales the step applied
    to ``theta`` only; ``E[dtheta^2]`` averages the unscaled ``dtheta``, as here.
    """
    zeros = torch.zeros_like(theta)
    eg2 = rho * state.get("Eg2", zeros) + (1.0 - rho) * grad * grad
    delta = -(state.get("Edx2", zeros) + eps).sqrt() / (eg2 + eps).sqrt() * grad
    edx2 = rho * state.get("Edx2", zeros) + (1.0 - rho) * delta * delta
    return theta + lr * delta, {"Eg2": eg2, "Edx2": edx2}


def adam_step(
    theta: Tensor,
    grad: Tensor,
    state: State,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_inside_sqrt: bool = True,
) -> tuple[Tensor, State]:
    """Adam: ``m_t = beta1 * m_{t-1} + (1 - beta1) * g_t``,
    ``v_t = beta2 * v_{t-1} + (1 - beta2) * g_t^2``,
    ``m_hat = m_t / (1 - beta1^t)``, ``v_hat = v_t / (1 - beta2^t)``,
    ``theta <- theta - lr * m_hat / sqrt(v_hat + eps)`` (the lecture's form).

    ``eps_inside_sqrt=False`` gives ``lr * m_hat / (sqrt(v_hat) + eps)``: Kingma & Ba's paper,
    Ruder and torch.optim.Adam.
    """
    zeros = torch.zeros_like(theta)
    t = int(state["t"].item()) + 1 if "t" in state else 1
    m = beta1 * state.get("m", zeros) + (1.0 - beta1) * grad
    v = beta2 * state.get("v", zeros) + (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1**t)
    v_hat = v / (1.0 - beta2**t)
    denom = (v_hat + eps).sqrt() if eps_inside_sqrt else v_hat.sqrt() + eps
    return theta - lr * m_hat / denom, {"t": torch.tensor(t), "m": m, "v": v}
