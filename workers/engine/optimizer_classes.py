"""Optimizer classes by name: ``torch.optim``'s, and those of installed packages (plugins).

A plugin optimizer is named ``<source>:<Name>`` (services/spec/optimizers.py,
docs/optimizers.md). The sources, found once per process (``plugins``):

- entry points of the group ``optbench.optimizers`` (``<name> = module:Class``, a
  ``torch.optim.Optimizer`` subclass), under their distribution's name (``tiny-opt`` →
  ``tiny_opt:<name>``);
- ``pytorch_optimizer`` (the extra ``optbench[more-optimizers]``): every class of its
  registry that is its own (its re-exports of ``torch.optim`` are torch's);
- the single-optimizer reference packages, where installed: ``schedulefree`` (the
  schedule-free family), ``lion_pytorch`` (Lion), ``prodigyopt`` (Prodigy).

Each class is described from its signature (``describe``): the keyword parameters with a
default that a JSON job can give, typed from the default and the annotation, with the bounds
of the name's usual range where the name has one (``NAMED_BOUNDS``) and none otherwise. A
class a job cannot train is listed with the reason (``refused``): one that needs an argument
without default (a model, the data size), second derivatives, or a closure. Workers publish
the descriptions to the database (workers/catalog.py); the torch-free API validates jobs
against them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import linecache
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "optbench.optimizers"

# Engine switches and ``maximize``: not hyperparameters, as for torch.optim
# (services/spec/optimizers.py), plus the packages' own implementation switches.
NOT_HYPERPARAMETERS = frozenset(
    {"params", "foreach", "fused", "capturable", "differentiable", "maximize", "use_triton"}
    | {"fsdp_in_use", "kwargs"}
)

# The usual range of a hyperparameter's name, as torch.optim's classes check it: applied to
# a plugin's parameter of that name when its own default lies in it (a class whose default
# is outside knows better: no bound then). Keys are JSON-schema bounds.
_UNIT = {"ge": 0.0, "lt": 1.0}
NAMED_BOUNDS: dict[str, dict[str, float]] = {
    "lr": {"gt": 0.0, "le": 1e6},
    "eps": {"gt": 0.0, "le": 1.0},
    "weight_decay": {"ge": 0.0},
    "betas": _UNIT,  # each element
    "beta1": _UNIT,
    "beta2": _UNIT,
    "beta3": _UNIT,
    "momentum": _UNIT,
    "dampening": _UNIT,
    "rho": _UNIT,
}

# Reference packages with one optimizer family each: (import name, class names).
SINGLE_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("schedulefree", ("AdamWScheduleFree", "SGDScheduleFree", "RAdamScheduleFree")),
    ("lion_pytorch", ("Lion",)),
    ("prodigyopt", ("Prodigy",)),
)
PACKAGE_DISTRIBUTIONS = {
    "pytorch_optimizer": "pytorch-optimizer",
    "schedulefree": "schedulefree",
    "lion_pytorch": "lion-pytorch",
    "prodigyopt": "prodigyopt",
}


@dataclass(frozen=True)
class PluginClass:
    """An installed optimizer class under its qualified name, and what a job may give it."""

    name: str  # "<source>:<Name>"
    source: str
    package: str  # the distribution that installed it
    version: str
    cls: type[torch.optim.Optimizer]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: str | None = None  # why a job cannot train it
    modes: bool = False  # has train()/eval() (schedule-free): switched around evaluations

    def describe(self) -> dict[str, Any]:
        """What the worker publishes (JSON): services/spec/optimizers.py builds the job's
        typed entry from it."""
        return {
            "name": self.name,
            "source": self.source,
            "package": self.package,
            "version": self.version,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "description": _first_line(self.cls.__doc__) or self.cls.__name__,
            "parameters": self.parameters,
            "modes": self.modes,
            "refused": self.refused,
        }


def resolve(torch_class: str) -> type[torch.optim.Optimizer]:
    """The class a run's ``torch_class`` names: a ``torch.optim`` class, or a plugin's
    ``<source>:<Name>``. ValueError naming what is available otherwise."""
    if ":" in torch_class:
        found = plugins().get(torch_class)
        if found is None:
            raise ValueError(
                f"no installed optimizer '{torch_class}' on this worker; installed: "
                f"{', '.join(sorted(plugins())) or 'none'}"
            )
        if found.refused:
            raise ValueError(f"{torch_class}: {found.refused}")
        return found.cls
    cls = getattr(torch.optim, torch_class, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"torch.optim has no optimizer '{torch_class}'")
    return cls


def has_modes(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer has train and eval modes (schedule-free: the weights it trains
    at are not the ones to evaluate). ``torch.optim.Optimizer`` itself has neither method."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


@functools.cache
def plugins() -> dict[str, PluginClass]:
    """Every plugin class this process can import, by qualified name (found once)."""
    found: dict[str, PluginClass] = {}
    for plugin in [*_entry_point_classes(), *_package_classes()]:
        if plugin.name in found:
            log.warning("optimizer %s is installed twice; keeping the first", plugin.name)
            continue
        found[plugin.name] = plugin
    return found


def catalog() -> list[dict[str, Any]]:
    """The published form of ``plugins()``, sorted by name."""
    return [plugins()[name].describe() for name in sorted(plugins())]


def _entry_point_classes() -> list[PluginClass]:
    classes = []
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist
        package = dist.metadata["Name"] if dist is not None else point.module.split(".")[0]
        version = dist.version if dist is not None else ""
        source = re.sub(r"[-.]+", "_", package).lower()
        try:
            loaded = point.load()
        except Exception as error:  # a broken plugin must not stop the worker
            log.warning("entry point %s (%s) does not load: %s", point.name, point.value, error)
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, torch.optim.Optimizer)):
            log.warning("entry point %s is not a torch.optim.Optimizer subclass", point.value)
            continue
        classes.append(_plugin(f"{source}:{point.name}", source, package, version, loaded))
    return classes


def _package_classes() -> list[PluginClass]:
    listed: list[tuple[str, type[torch.optim.Optimizer]]] = []
    try:
        from pytorch_optimizer.optimizer import OPTIMIZERS
    except ImportError:
        OPTIMIZERS = {}
    for cls in OPTIMIZERS.values():
        if not cls.__module__.startswith("torch."):  # its re-exports of torch.optim
            listed.append(("pytorch_optimizer", cls))
    for module_name, names in SINGLE_PACKAGES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        listed += [(module_name, getattr(module, name)) for name in names if hasattr(module, name)]
    classes = []
    for source, cls in listed:
        package = PACKAGE_DISTRIBUTIONS[source]
        classes.append(_plugin(f"{source}:{cls.__name__}", source, package, _version(package), cls))
    return classes


@functools.cache
def _version(package: str) -> str:
    """The installed version of ``package`` ("" when it is not a distribution); read once:
    parsing its metadata for each of pytorch_optimizer's 120 classes took 0.1 s."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _plugin(
    name: str, source: str, package: str, version: str, cls: type[torch.optim.Optimizer]
) -> PluginClass:
    parameters, refused = describe(cls)
    modes = callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None))
    return PluginClass(name, source, package, version, cls, parameters, refused, modes)


def describe(cls: type[torch.optim.Optimizer]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The class's hyperparameters from its signature (name → type, default, bounds and where
    the bounds come from), and why a job cannot train it (None: it can)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}, "its constructor's signature cannot be read"
    parameters: dict[str, dict[str, Any]] = {}
    for index, parameter in enumerate(signature.parameters.values()):
        if index == 0 or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue  # self, *args, **kwargs
        if parameter.name in NOT_HYPERPARAMETERS:
            continue
        if parameter.default is inspect.Parameter.empty:
            if parameter.name == "lr":  # a learning rate without default: the job gives one
                parameters["lr"] = {"type": "float", "required": True, **_bounds("lr", None)}
                continue
            return parameters, (
                f"its constructor needs '{parameter.name}' (no default), which a job cannot give"
            )
        described = _parameter(parameter.name, parameter.default, str(parameter.annotation))
        if described is not None:
            parameters[parameter.name] = described
    return parameters, _step_refusal(cls) or _construction_refusal(cls, parameters)


def _construction_refusal(
    cls: type[torch.optim.Optimizer], parameters: dict[str, dict[str, Any]]
) -> str | None:
    """Why the class cannot be built on a model's parameters (a matrix and a vector, as a
    member's optimizer gets them) with its defaults, or None. The Muon family, for one, wants
    parameter groups marked for it, which one optimizer entry does not make."""
    if any(described.get("required") for described in parameters.values()):
        return None  # a job gives the value; nothing to try it with here
    build: Callable[..., torch.optim.Optimizer] = cls  # with its defaults
    try:
        build([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(2))])
    except Exception as error:
        if "use_muon" in _source(cls):
            return (
                "it wants parameter groups marked 'use_muon' (Muon on the hidden weight "
                "matrices, AdamW on the rest), which one optimizer entry does not make"
            )
        return (
            "it cannot be built on a model's parameter list with its defaults "
            f"({type(error).__name__}: {error})"
        )
    return None


def _source(cls: type) -> str:
    try:
        return inspect.getsource(inspect.getmodule(cls) or cls)
    except (OSError, TypeError):
        return ""


def _function_source(function: Callable[..., Any]) -> str:
    """The lines of ``function``'s definition, decorators and docstring included, as
    ``inspect.getsource`` gives them but read by the line numbers its code spans: getsource
    tokenizes each function to find its end, 0.3 s of a worker's start for 127 classes.
    "" where there is no Python source."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None:
        return ""
    lines = linecache.getlines(code.co_filename)
    last = max((line for *_, line in code.co_lines() if line is not None), default=0)
    return "".join(lines[code.co_firstlineno - 1 : max(last, code.co_firstlineno)])


def _step_refusal(cls: type[torch.optim.Optimizer]) -> str | None:
    """Second derivatives or a closure: what optbench's step does not give (it calls
    ``loss.backward()`` once, then ``step()``; only torch's LBFGS gets a closure)."""
    source = _function_source(cls.step)
    if not source:
        return None
    if "hessian" in source.lower() or "create_graph" in source:
        return (
            "it needs second derivatives (a Hessian estimate from loss.backward("
            "create_graph=True) every step), which optbench's training step does not compute; "
            "compare first-order optimizers, or torch's 'lbfgs' for curvature"
        )
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        return "its step needs a closure that re-evaluates the loss; use torch's 'lbfgs'"
    if re.search(r"closure is None[^\n]*:\s*\n\s*raise", source):
        return "its step needs a closure that re-evaluates the loss; use torch's 'lbfgs'"
    return None


def _parameter(name: str, default: Any, annotation: str) -> dict[str, Any] | None:
    """One parameter's description, or None where a JSON job cannot give it (a callable, a
    dtype, a non-finite default: the class's own default then always applies)."""
    if isinstance(default, bool):
        return {"type": "bool", "default": default, "bounds_from": "none"}
    if isinstance(default, int) and "float" not in annotation and name not in NAMED_BOUNDS:
        return {"type": "int", "default": default, **_bounds(name, default)}
    if isinstance(default, int | float):
        if not math.isfinite(default):
            return None
        return {"type": "float", "default": float(default), **_bounds(name, default)}
    if isinstance(default, str):
        choices = re.findall(r"'([^']*)'", annotation) if "Literal" in annotation else []
        if choices and default in choices:
            return {"type": "choice", "default": default, "choices": choices, "bounds_from": "none"}
        return {"type": "str", "default": default, "bounds_from": "none"}
    if isinstance(default, tuple | list) and default and all(_finite_number(v) for v in default):
        return {
            "type": "floats",
            "length": len(default),
            "default": [float(v) for v in default],
            **_bounds(name, *default),
        }
    if default is None:
        for kind in ("float", "int", "bool"):
            if re.search(rf"\b{kind}\b", annotation):
                return {"type": kind, "default": None, "nullable": True, **_bounds(name, None)}
    return None


def _bounds(name: str, *defaults: Any) -> dict[str, Any]:
    """The name's usual range, where every given default (None aside) lies in it."""
    bounds = NAMED_BOUNDS.get(name)
    if bounds is None or not all(v is None or _within(float(v), bounds) for v in defaults):
        return {"bounds_from": "none"}
    return {"bounds": dict(bounds), "bounds_from": "name"}


def _within(value: float, bounds: dict[str, float]) -> bool:
    checks: dict[str, Callable[[float, float], bool]] = {
        "gt": lambda v, b: v > b,
        "ge": lambda v, b: v >= b,
        "lt": lambda v, b: v < b,
        "le": lambda v, b: v <= b,
    }
    return all(checks[key](value, bound) for key, bound in bounds.items())


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines()]
    return lines[0] if lines else ""
