"""Parameter groups of an optimizer entry: which of the model's parameters each optimizer
of the entry updates, with which hyperparameters.

    {"label": "muon+adamw", "name": "adamw", "lr": 0.003, "weight_decay": 0.01,
     "no_decay": ["bias", "norm"],
     "groups": [{"params": "matrix", "name": "muon", "lr": 0.02}]}

No torch here: a model's parameters (their names as ``named_parameters()`` gives them, and
each one's *role*) are derived from its spec (``model_parameters``), and
``tests/unit/test_groups.py`` checks them against the real modules.

Every parameter has exactly one role:

- ``norm``: the weight and bias of a normalisation layer (batch or layer norm);
- ``bias``: the bias of any other layer (the first and last layers' included);
- ``input``: the first layer's weight (the linear model's one layer is ``output``);
- ``output``: the last layer's weight (the classifier or regression head);
- ``matrix``: every other weight: the hidden layers' matrices (2-D for a linear layer, 4-D
  for a convolution).

A selector (``params``) is a role, a glob on parameter names (``"3.*"``, ``"*.weight"``), a
list of those, or ``"rest"``: every parameter no earlier group took (only as the last
group). Groups are disjoint: a parameter two groups select is an error, and so is a group
that selects nothing; the parameters no group selects train with the entry's own optimizer
and hyperparameters (an implicit last ``rest``). ``no_decay`` (on the entry: its own
optimizer's parameters; on a group: that group's) gives the parameters it selects
``weight_decay`` 0 in the same optimizer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.spec.text import refuse_control_characters

ROLES: dict[str, str] = {
    "matrix": "hidden weights: every weight that is neither the first nor the last layer's "
    "(2-D linear, 4-D convolution)",
    "bias": "every bias outside normalisation layers (the first and last layers' included)",
    "norm": "weights and biases of normalisation layers (batch, layer)",
    "input": "the first layer's weight",
    "output": "the last layer's weight (the linear model's one layer)",
}
REST = "rest"
SELECTOR_HELP = (
    f"a role ({', '.join(ROLES)}), a glob on parameter names ('*.weight', '3.*'), a list of "
    f"those, or '{REST}' (every parameter no earlier group took)"
)


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of a model: its name in ``named_parameters()``, role and dimensions."""

    name: str
    role: str
    ndim: int

    def describe(self) -> str:
        return f"{self.name} ({self.role}, {self.ndim}-D)"


class GroupError(ValueError):
    """A grouping that does not fit the model: the message names the groups and parameters."""


def _layer(prefix: str, role: str, ndim: int, bias: bool = True) -> list[ParameterInfo]:
    out = [ParameterInfo(f"{prefix}weight", role, ndim)]
    if bias:
        out.append(ParameterInfo(f"{prefix}bias", "bias", 1))
    return out


def _norm(prefix: str) -> list[ParameterInfo]:
    return [ParameterInfo(f"{prefix}weight", "norm", 1), ParameterInfo(f"{prefix}bias", "norm", 1)]


def _mlp(hidden: Sequence[int], norm: str | None, dropout: float) -> list[ParameterInfo]:
    # workers/engine/models.py: Flatten, then per hidden layer Linear, [norm], activation,
    # [dropout], and the output Linear.
    out: list[ParameterInfo] = []
    index = 1
    for layer in range(len(hidden)):
        out += _layer(f"{index}.", "input" if layer == 0 else "matrix", 2)
        index += 1
        if norm:
            out += _norm(f"{index}.")
            index += 1
        index += 2 if dropout else 1
    return out + _layer(f"{index}.", "output", 2)


def _cnn() -> list[ParameterInfo]:
    # features (conv, act, pool, conv, act, pool, flatten), Linear, act, Linear, act, Linear
    return [
        *_layer("0.0.", "input", 4),
        *_layer("0.3.", "matrix", 4),
        *_layer("1.", "matrix", 2),
        *_layer("3.", "matrix", 2),
        *_layer("5.", "output", 2),
    ]


def _resnet(blocks: int) -> list[ParameterInfo]:
    # conv, bn, relu, then 3 x blocks residual blocks (body: conv, bn, relu, conv, bn; skip:
    # conv, bn where the shape changes), pool, flatten, Linear.
    out = [*_layer("0.", "input", 4, bias=False), *_norm("1.")]
    index = 3
    for stage in range(3):
        for block in range(blocks):
            prefix = f"{index}."
            out += [
                *_layer(f"{prefix}body.0.", "matrix", 4, bias=False),
                *_norm(f"{prefix}body.1."),
                *_layer(f"{prefix}body.3.", "matrix", 4, bias=False),
                *_norm(f"{prefix}body.4."),
            ]
            if stage > 0 and block == 0:  # stride 2 and twice the channels: a projection
                out += [
                    *_layer(f"{prefix}skip.0.", "matrix", 4, bias=False),
                    *_norm(f"{prefix}skip.1."),
                ]
            index += 1
    return out + _layer(f"{index + 2}.", "output", 2)


def model_parameters(model: Any) -> list[ParameterInfo]:
    """The parameters of the model a spec (``services/spec/models.py``) builds, in
    ``named_parameters()`` order; empty for the landscapes' ``point``."""
    name = model.name
    if name == "linear":
        return _layer("1.", "output", 2)
    if name == "mlp":
        return _mlp(model.hidden, model.norm, model.dropout)
    if name == "cnn":
        return _cnn()
    if name == "resnet":
        return _resnet(model.blocks)
    return []


def selector_items(selector: str | Sequence[str]) -> list[str]:
    return [selector] if isinstance(selector, str) else list(selector)


def check_selector(selector: str | Sequence[str], last: bool) -> None:
    """The model-free checks: 'rest' alone and last; no empty pattern."""
    items = selector_items(selector)
    if not items:
        raise ValueError(f"params: give at least one selector: {SELECTOR_HELP}")
    if REST in items and (len(items) > 1 or not last):
        raise ValueError(
            f"params: '{REST}' takes every parameter no earlier group took, so it stands alone "
            "in the last group"
        )


def selects(selector: str | Sequence[str], parameter: ParameterInfo) -> bool:
    for item in selector_items(selector):
        if item in ROLES:
            if parameter.role == item:
                return True
        elif fnmatch.fnmatchcase(parameter.name, item):
            return True
    return False


@dataclass(frozen=True)
class ResolvedGroup:
    """One torch parameter group: its optimizer (catalog name), torch keyword arguments and
    the names of the parameters it updates."""

    name: str
    hyperparameters: dict[str, Any]
    parameters: tuple[str, ...]


def resolve(
    name: str,
    hyperparameters: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]],
    no_decay: str | Sequence[str] | None,
    parameters: Sequence[ParameterInfo],
    where: str = "",
) -> list[ResolvedGroup]:
    """The torch parameter groups of an entry: ``name`` and ``hyperparameters`` its own
    optimizer, ``groups`` as stored (``params``, ``name``, ``no_decay`` and the group's torch
    keyword arguments). Order: the groups in order (each one's ``no_decay`` part after it),
    then the entry's own parameters. ``GroupError`` (prefixed with ``where``, e.g.
    ``optimizers[0].``) when a group selects nothing or two groups select one parameter."""
    taken: dict[str, int] = {}
    chosen: list[list[ParameterInfo]] = []
    for index, group in enumerate(groups):
        selector = group["params"]
        if selector == REST or selector == [REST]:
            mine = [p for p in parameters if p.name not in taken]
        else:
            mine = [p for p in parameters if selects(selector, p)]
        if not mine:
            raise GroupError(
                f"{where}groups[{index}]: params {selector!r} selects no parameter"
                + (" the earlier groups left" if taken else "")
                + f"; {describe_model_list(parameters)}"
            )
        twice = [p.name for p in mine if p.name in taken]
        if twice:
            others = sorted({taken[n] for n in twice})
            raise GroupError(
                f"{where}groups[{index}]: params {selector!r} selects "
                f"{', '.join(twice)}, which groups[{others[0]}] selected already; every "
                f"parameter belongs to exactly one group; {describe_model_list(parameters)}"
            )
        taken.update((p.name, index) for p in mine)
        chosen.append(mine)
    out: list[ResolvedGroup] = []
    for group, mine in zip(groups, chosen, strict=True):
        kwargs = {k: v for k, v in group.items() if k not in ("params", "name", "no_decay")}
        out += _split(str(group["name"]), kwargs, mine, group.get("no_decay"))
    rest = [p for p in parameters if p.name not in taken]
    if rest:
        out += _split(name, dict(hyperparameters), rest, no_decay)
    elif no_decay:
        raise GroupError(
            f"{where}no_decay: the entry's own optimizer trains no parameter here (the groups "
            "took them all); put no_decay on the group whose parameters it means"
        )
    return out


def _split(
    name: str,
    kwargs: dict[str, Any],
    parameters: list[ParameterInfo],
    no_decay: str | Sequence[str] | None,
) -> list[ResolvedGroup]:
    off = [p for p in parameters if no_decay and selects(no_decay, p)]
    on = [p for p in parameters if p not in off]
    out = []
    if on:
        out.append(ResolvedGroup(name, kwargs, tuple(p.name for p in on)))
    if off:
        out.append(ResolvedGroup(name, {**kwargs, "weight_decay": 0.0}, tuple(p.name for p in off)))
    return out


def describe_model_list(parameters: Sequence[ParameterInfo]) -> str:
    return "the model's parameters: " + ", ".join(p.describe() for p in parameters)


_Item = Annotated[str, Field(min_length=1, max_length=200)]
Selector = _Item | Annotated[list[_Item], Field(min_length=1, max_length=64)]


class ParameterGroupSpec(BaseModel):
    """One group of an optimizer entry: the parameters ``params`` selects, trained with the
    optimizer ``name`` (default: the entry's own) and the hyperparameters given beside it.
    A group of the entry's own optimizer starts from the entry's values; a group of another
    optimizer from that optimizer's defaults."""

    # Extra keys are the group's hyperparameters, validated against its optimizer's by the
    # entry (services/spec/optimizers.py), which knows the catalog.
    model_config = ConfigDict(frozen=True, extra="allow")

    params: Selector = Field(description=f"which parameters: {SELECTOR_HELP}")
    name: str | None = Field(
        default=None, description="the group's optimizer (catalog name); default: the entry's"
    )
    no_decay: Selector | None = Field(
        default=None,
        description="of this group's parameters, those these select get weight_decay 0",
    )

    @field_validator("params", "no_decay", "name")
    @classmethod
    def _text(cls, value: Any) -> Any:
        for text in selector_items(value) if value is not None else ():
            if not isinstance(text, str) or not text:
                raise ValueError(f"give {SELECTOR_HELP}")
            refuse_control_characters(text)
        return value

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters given in the group (its extra keys)."""
        return dict(self.model_extra or {})
