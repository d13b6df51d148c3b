"""The optimizer catalog: every optimizer a job may name, with typed, bounded hyperparameters.

No torch here (the API must not need it): the catalog mirrors ``torch.optim``'s signatures,
and ``tests/unit/test_catalog_agreement.py`` constructs every entry in torch with its defaults
so the two cannot drift apart.

Names are case-insensitive. The eight lecture aliases are ``gd`` (full-batch gradient
descent: one step per epoch over the whole training split), ``sgd``, ``momentum``, ``nag``,
``adagrad``, ``rmsprop``, ``adadelta`` and ``adam``; any other ``torch.optim`` class is named
by its class name (``AdamW``, ``NAdam``, ``LBFGS``, ...). Engine switches that do not change
the mathematics (``foreach``, ``fused``, ``capturable``, ``differentiable``) and ``maximize``
(optbench always minimises the loss) are not hyperparameters here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)

from services.spec.base import StrictModel
from services.spec.schedules import ScheduleSpec
from services.spec.tuning import Distribution, check_space

LearningRate = Annotated[float, Field(gt=0.0, le=1e6, description="learning rate")]
Decay = Annotated[float, Field(ge=0.0, le=1.0, description="weight decay (L2 penalty)")]
Epsilon = Annotated[float, Field(gt=0.0, le=1.0, description="term added for numerical stability")]
Unit = Annotated[float, Field(ge=0.0, lt=1.0)]
Betas = tuple[Unit, Unit]


@dataclass(frozen=True)
class Param:
    annotation: Any
    default: Any
    description: str


@dataclass(frozen=True)
class OptimizerInfo:
    """One catalog entry: ``torch_class`` built with ``fixed`` plus the user's ``params``."""

    name: str
    torch_class: str
    description: str
    params: dict[str, Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    full_batch: bool = False


def _lr(default: float) -> Param:
    return Param(LearningRate, default, "learning rate")


_WD = Param(Decay, 0.0, "weight decay (L2 penalty added to the gradient)")
_BETAS = Param(Betas, (0.9, 0.999), "decay rates of the first and second moment estimates")
_EPS = Param(Epsilon, 1e-8, "term added to the denominator for numerical stability")
_AMSGRAD = Param(bool, False, "use the AMSGrad variant (running maximum of the second moment)")
_DECOUPLED = Param(bool, False, "decouple weight decay from the gradient (AdamW style)")

_SGD_PARAMS = {
    "lr": _lr(1e-3),
    "momentum": Param(Unit, 0.0, "momentum factor"),
    "dampening": Param(Unit, 0.0, "dampening for momentum"),
    "weight_decay": _WD,
    "nesterov": Param(bool, False, "Nesterov momentum (needs momentum > 0 and dampening 0)"),
}
_ADAM_PARAMS = {
    "lr": _lr(1e-3),
    "betas": _BETAS,
    "eps": _EPS,
    "weight_decay": _WD,
    "amsgrad": _AMSGRAD,
    "decoupled_weight_decay": _DECOUPLED,
}
_ADAGRAD_PARAMS = {
    "lr": _lr(1e-2),
    "lr_decay": Param(Annotated[float, Field(ge=0.0, le=1.0)], 0.0, "learning-rate decay"),
    "weight_decay": _WD,
    "initial_accumulator_value": Param(
        Annotated[float, Field(ge=0.0, le=1e3)], 0.0, "starting value of the squared-gradient sum"
    ),
    "eps": Param(Epsilon, 1e-10, "term added to the denominator for numerical stability"),
}
_RMSPROP_PARAMS = {
    "lr": _lr(1e-2),
    "alpha": Param(Unit, 0.99, "smoothing constant of the squared-gradient average"),
    "eps": _EPS,
    "weight_decay": _WD,
    "momentum": Param(Unit, 0.0, "momentum factor"),
    "centered": Param(bool, False, "normalise by the estimated gradient variance"),
}
_ADADELTA_PARAMS = {
    "lr": _lr(1.0),
    "rho": Param(Unit, 0.9, "decay rate of the running averages"),
    "eps": Param(Epsilon, 1e-6, "term added inside the square roots for numerical stability"),
    "weight_decay": _WD,
}

CATALOG: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        # The lecture's eight.
        OptimizerInfo(
            "gd",
            "SGD",
            "Full-batch gradient descent: one step per epoch over the whole training split.",
            {"lr": _lr(1e-3), "weight_decay": _WD},
            full_batch=True,
        ),
        OptimizerInfo(
            "sgd",
            "SGD",
            "Stochastic gradient descent on mini-batches (torch.optim.SGD).",
            _SGD_PARAMS,
        ),
        OptimizerInfo(
            "momentum",
            "SGD",
            "SGD with (heavy-ball) momentum.",
            {
                "lr": _lr(1e-3),
                "momentum": Param(Unit, 0.9, "momentum factor"),
                "dampening": Param(Unit, 0.0, "dampening for momentum"),
                "weight_decay": _WD,
            },
        ),
        OptimizerInfo(
            "nag",
            "SGD",
            "Nesterov accelerated gradient (SGD, nesterov=True).",
            {
                "lr": _lr(1e-3),
                "momentum": Param(Annotated[float, Field(gt=0.0, lt=1.0)], 0.9, "momentum factor"),
                "weight_decay": _WD,
            },
            fixed={"nesterov": True},
        ),
        OptimizerInfo(
            "adagrad",
            "Adagrad",
            "Adagrad: per-parameter steps scaled by the summed squared gradients.",
            _ADAGRAD_PARAMS,
        ),
        OptimizerInfo(
            "rmsprop",
            "RMSprop",
            "RMSProp: steps scaled by a moving average of squared gradients.",
            _RMSPROP_PARAMS,
        ),
        OptimizerInfo(
            "adadelta",
            "Adadelta",
            "AdaDelta: RMSProp with a unit-correcting running average of updates.",
            _ADADELTA_PARAMS,
        ),
        OptimizerInfo(
            "adam", "Adam", "Adam: bias-corrected first and second moment estimates.", _ADAM_PARAMS
        ),
        # The rest of torch.optim.
        OptimizerInfo(
            "adamw",
            "AdamW",
            "Adam with decoupled weight decay.",
            {k: v for k, v in _ADAM_PARAMS.items() if k != "decoupled_weight_decay"}
            | {"weight_decay": Param(Decay, 1e-2, "decoupled weight decay")},
        ),
        OptimizerInfo(
            "adamax",
            "Adamax",
            "Adam with the infinity norm for the second moment.",
            {"lr": _lr(2e-3), "betas": _BETAS, "eps": _EPS, "weight_decay": _WD},
        ),
        OptimizerInfo(
            "nadam",
            "NAdam",
            "Adam with Nesterov momentum.",
            {
                "lr": _lr(2e-3),
                "betas": _BETAS,
                "eps": _EPS,
                "weight_decay": _WD,
                "momentum_decay": Param(
                    Annotated[float, Field(ge=0.0, le=1.0)], 4e-3, "momentum decay"
                ),
                "decoupled_weight_decay": _DECOUPLED,
            },
        ),
        OptimizerInfo(
            "radam",
            "RAdam",
            "Rectified Adam: variance-rectified adaptive steps.",
            {
                "lr": _lr(1e-3),
                "betas": _BETAS,
                "eps": _EPS,
                "weight_decay": _WD,
                "decoupled_weight_decay": _DECOUPLED,
            },
        ),
        OptimizerInfo(
            "asgd",
            "ASGD",
            "Averaged stochastic gradient descent.",
            {
                "lr": _lr(1e-2),
                "lambd": Param(Annotated[float, Field(ge=0.0, le=1.0)], 1e-4, "decay term"),
                "alpha": Param(
                    Annotated[float, Field(ge=0.0, le=10.0)], 0.75, "power for the eta update"
                ),
                "t0": Param(Annotated[float, Field(ge=0.0)], 1e6, "step at which averaging starts"),
                "weight_decay": _WD,
            },
        ),
        OptimizerInfo(
            "rprop",
            "Rprop",
            "Resilient backpropagation: sign-based adaptive steps.",
            {
                "lr": _lr(1e-2),
                "etas": Param(
                    tuple[
                        Annotated[float, Field(gt=0.0, lt=1.0)],
                        Annotated[float, Field(gt=1.0, le=10.0)],
                    ],
                    (0.5, 1.2),
                    "(decrease, increase) multiplicative factors",
                ),
                "step_sizes": Param(
                    tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(gt=0.0)]],
                    (1e-6, 50.0),
                    "(minimal, maximal) step size",
                ),
            },
        ),
        OptimizerInfo(
            "lbfgs",
            "LBFGS",
            "L-BFGS quasi-Newton method (re-evaluates the batch through a closure).",
            {
                "lr": _lr(1.0),
                "max_iter": Param(
                    Annotated[int, Field(ge=1, le=1000)],
                    20,
                    "maximal iterations per optimizer step",
                ),
                "max_eval": Param(
                    Annotated[int, Field(ge=1, le=10000)] | None,
                    None,
                    "maximal function evaluations per step (default max_iter * 1.25)",
                ),
                "tolerance_grad": Param(
                    Annotated[float, Field(ge=0.0)],
                    1e-7,
                    "termination tolerance on first-order optimality",
                ),
                "tolerance_change": Param(
                    Annotated[float, Field(ge=0.0)],
                    1e-9,
                    "termination tolerance on function/parameter changes",
                ),
                "history_size": Param(
                    Annotated[int, Field(ge=1, le=1000)], 100, "update history size"
                ),
                "line_search_fn": Param(
                    Literal["strong_wolfe"] | None, None, "line search: null or 'strong_wolfe'"
                ),
            },
        ),
        OptimizerInfo(
            "adafactor",
            "Adafactor",
            "Adafactor: factored second-moment estimates.",
            {
                "lr": _lr(1e-2),
                "beta2_decay": Param(
                    Annotated[float, Field(ge=-1.0, le=0.0)],
                    -0.8,
                    "decay rate of the second moment",
                ),
                "eps": Param(
                    tuple[Annotated[float, Field(gt=0.0)] | None, Annotated[float, Field(gt=0.0)]],
                    (None, 1e-3),
                    "(epsilon1, epsilon2); null epsilon1 means the dtype's machine epsilon",
                ),
                "d": Param(
                    Annotated[float, Field(gt=0.0)], 1.0, "clipping threshold of the relative step"
                ),
                "weight_decay": _WD,
            },
        ),
    ]
}

# torch.optim classes a job cannot use, and why (the message tells the user what to do).
REFUSED: dict[str, str] = {
    "sparseadam": "SparseAdam needs sparse gradients (nn.Embedding(sparse=True)), which no "
    "optbench model produces; use 'adam' or 'adamw'",
    "muon": "Muon updates 2-D weight matrices only and needs a second optimizer for biases, "
    "which a single optimizer entry cannot express yet; use 'adamw' or 'nag'",
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(CATALOG)


def canonical_name(value: object) -> object:
    """Case-insensitive names: 'AdamW' and 'adamw' are the same optimizer."""
    return value.lower() if isinstance(value, str) else value


class OptimizerEntryBase(StrictModel):
    name: str  # each catalog entry narrows it to its own Literal name
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:+\-]+$",
        description="Name of this entry in results; defaults to the optimizer name.",
    )

    schedule: ScheduleSpec | None = Field(
        default=None, description="learning-rate schedule of this entry (units: steps)"
    )
    search: dict[str, Distribution] | None = Field(
        default=None,
        description="tuning: hyperparameter (or 'schedule.<field>', 'betas.0') → distribution; "
        "the entry's own values are its one-shot setting (see the job's 'tuning')",
        max_length=32,
    )

    @property
    def info(self) -> OptimizerInfo:
        return CATALOG[self.name]

    @property
    def display_label(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _check_combination(self) -> OptimizerEntryBase:
        values = self.hyperparameters()
        if values.get("nesterov") and (
            values.get("momentum", 0) <= 0 or values.get("dampening", 0)
        ):
            raise ValueError("nesterov=true needs momentum > 0 and dampening 0")
        if self.search:
            check_space(self)
        return self

    def hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments of the torch constructor (the user's values and the fixed ones)."""
        values = self.model_dump(exclude={"name", "label", "schedule", "search"})
        return {**values, **self.info.fixed}


def _entry_model(info: OptimizerInfo) -> type[OptimizerEntryBase]:
    fields: dict[str, Any] = {
        "name": (Annotated[Literal[info.name], BeforeValidator(canonical_name)], ...),
    }
    for key, param in info.params.items():
        fields[key] = (
            param.annotation,
            Field(default=param.default, description=param.description),
        )
    return create_model(
        f"Optimizer_{info.name}",
        __base__=OptimizerEntryBase,
        __doc__=info.description,
        **fields,
    )


ENTRY_MODELS: dict[str, type[OptimizerEntryBase]] = {
    name: _entry_model(info) for name, info in CATALOG.items()
}


def _entry_tag(value: Any) -> str | None:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    if isinstance(name, str) and PLUGIN_NAME.fullmatch(name):
        return PLUGIN_TAG  # an installed package's optimizer (below)
    name = canonical_name(name)
    return name if name in CATALOG else None


_ALLOWED = ", ".join(OPTIMIZER_NAMES) + (
    ", or an installed package's optimizer as '<source>:<Name>' (e.g. "
    "'pytorch_optimizer:Lion'; GET /v1/catalog lists them)"
)

# --- Optimizers of installed packages (plugins) ---------------------------------------------
#
# A worker finds the optimizer classes of installed packages (workers/engine/
# optimizer_classes.py) and publishes each one's hyperparameters, typed from its signature, to
# the database (services/plugins.py). A job names one as "<source>:<Name>", case-insensitive
# ("pytorch_optimizer:Lion", "schedulefree:AdamWScheduleFree"). Parsing a spec cannot know
# which are installed (the API has no torch and no plugins), so a plugin entry parses as a
# ``PluginEntry`` that keeps its keys; at submission services/plugins.py replaces it by the
# entry model built from the live workers' description (``plugin_entry_model``), which
# validates it exactly as a torch.optim entry is validated: types, defaults, bounds.

PLUGIN_TAG = "plugin"
PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}:[A-Za-z0-9_.\-]{1,59}")  # run.optimizer: 100


def plugin_info(
    name: str, description: str = "", params: dict[str, Param] | None = None
) -> OptimizerInfo:
    """A plugin's catalog entry: its class is named by the plugin name itself."""
    return OptimizerInfo(name, name, description, params or {})


class PluginEntry(OptimizerEntryBase):
    """An installed package's optimizer, '<source>:<Name>'; its hyperparameters are checked
    at submission against what the live workers published (GET /v1/catalog)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(pattern=PLUGIN_NAME.pattern, description="'<source>:<Name>'")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        return data  # the keys are the plugin's hyperparameters, checked at submission

    @model_validator(mode="after")
    def _check_combination(self) -> PluginEntry:
        # The hyperparameters are checked at submission, by the typed entry
        # (``plugin_entry_model``); the label here, which defaults to the name.
        if self.label is None and len(self.name) > 64:
            raise ValueError(
                f"label: '{self.name}' is longer than a label may be (64 characters); give the "
                "entry a shorter 'label'"
            )
        return self

    @property
    def info(self) -> OptimizerInfo:
        return plugin_info(self.name)


class TypedPluginEntry(OptimizerEntryBase):
    """The base of the entry models built from a worker's description of a plugin."""

    plugin: ClassVar[OptimizerInfo]

    @property
    def info(self) -> OptimizerInfo:
        return self.plugin

    @model_validator(mode="after")
    def _check_combination(self) -> TypedPluginEntry:
        # Not torch's SGD rule on nesterov and momentum: a plugin's names mean its own.
        if self.search:
            check_space(self)
        return self


_JSON_BOUNDS = ("gt", "ge", "lt", "le")


def plugin_param(described: dict[str, Any]) -> Param:
    """A plugin parameter as published (workers/engine/optimizer_classes.py) → its typed
    ``Param``, as the torch.optim entries declare theirs."""
    kind = described["type"]
    bounds = {
        key: value for key, value in (described.get("bounds") or {}).items() if key in _JSON_BOUNDS
    }
    annotation: Any
    if kind == "float":
        annotation = Annotated[float, Field(**bounds)]
    elif kind == "int":
        annotation = Annotated[int, Field(**bounds)]
    elif kind == "bool":
        annotation = bool
    elif kind == "choice":
        annotation = Literal[tuple(described["choices"])]
    elif kind == "floats":
        annotation = tuple[(Annotated[float, Field(**bounds)],) * int(described["length"])]  # type: ignore[misc]
    else:
        annotation = Annotated[str, Field(max_length=200)]
    if described.get("nullable"):
        annotation = annotation | None
    default = described.get("default")
    if kind == "floats" and default is not None:
        default = tuple(default)
    origin = "the name's usual range" if described.get("bounds_from") == "name" else "none known"
    note = f"{kind}; bounds: {origin}"
    return Param(annotation, ... if described.get("required") else default, note)


def plugin_entry_model(described: dict[str, Any]) -> type[OptimizerEntryBase]:
    """The entry model of a plugin optimizer from its published description: its name as
    published, its parameters typed and bounded (``plugin_param``)."""
    name = described["name"]
    params = {key: plugin_param(value) for key, value in described["parameters"].items()}
    fields: dict[str, Any] = {"name": (Literal[name], ...)}
    for key, param in params.items():
        fields[key] = (
            param.annotation,
            Field(default=param.default, description=param.description),
        )
    model = create_model(
        f"Optimizer_{re.sub(r'[^A-Za-z0-9_]', '_', name)}",
        __base__=TypedPluginEntry,
        __doc__=described.get("description") or name,
        **fields,
    )
    model.plugin = plugin_info(name, described.get("description", ""), params)
    return model


# One tagged union: the OpenAPI schema shows each optimizer with its own parameters, and a
# wrong parameter is reported against the right optimizer.
if TYPE_CHECKING:
    OptimizerEntry = OptimizerEntryBase
else:
    OptimizerEntry = Annotated[
        Union[
            (
                *(Annotated[model, Tag(name)] for name, model in ENTRY_MODELS.items()),
                Annotated[PluginEntry, Tag(PLUGIN_TAG)],
            )
        ],
        Discriminator(
            _entry_tag,
            custom_error_type="unknown_optimizer",
            custom_error_message=f"unknown optimizer name; allowed (case-insensitive): {_ALLOWED}",
        ),
    ]
