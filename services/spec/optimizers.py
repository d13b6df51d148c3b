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
    ValidationError,
    create_model,
    model_validator,
)

from services.spec.base import StrictModel
from services.spec.groups import (
    GroupError,
    ParameterGroupSpec,
    ParameterInfo,
    ResolvedGroup,
    Selector,
    check_selector,
    describe_model_list,
    resolve,
)
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
    # Updates 2-D matrices only (Muon): its parameters must all be 2-D (services/spec/groups.py).
    matrices_only: bool = False


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
        OptimizerInfo(
            "muon",
            "Muon",
            "Muon: momentum orthogonalised by Newton-Schulz iterations, for 2-D hidden weight "
            "matrices (the other parameters train with another optimizer: 'groups').",
            {
                "lr": _lr(1e-3),
                "weight_decay": Param(Decay, 0.1, "decoupled weight decay"),
                "momentum": Param(Unit, 0.95, "momentum factor"),
                "nesterov": Param(bool, True, "Nesterov momentum"),
                "ns_coefficients": Param(
                    tuple[float, float, float],
                    (3.4445, -4.775, 2.0315),
                    "coefficients of the quintic Newton-Schulz iteration",
                ),
                "eps": Param(Epsilon, 1e-7, "term added to the norm before orthogonalising"),
                "ns_steps": Param(
                    Annotated[int, Field(ge=1, le=100)], 5, "Newton-Schulz iterations per step"
                ),
                "adjust_lr_fn": Param(
                    Literal["original", "match_rms_adamw"] | None,
                    None,
                    "scaling of lr by the matrix's shape: null or 'original' "
                    "(sqrt(max(1, rows / cols))), 'match_rms_adamw' (0.2 sqrt(max(rows, cols)): "
                    "AdamW's lr and weight decay carry over)",
                ),
            },
            matrices_only=True,
        ),
    ]
}

# torch.optim classes a job cannot use, and why (the message tells the user what to do).
REFUSED: dict[str, str] = {
    "sparseadam": "SparseAdam needs sparse gradients (nn.Embedding(sparse=True)), which no "
    "optbench model produces; use 'adam' or 'adamw'",
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
    groups: list[ParameterGroupSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="parameter groups, each with its own optimizer and hyperparameters "
        "(services/spec/groups.py); parameters no group selects train with this entry's",
    )
    no_decay: Selector | None = Field(
        default=None,
        description="of the parameters this entry's own optimizer trains, those these select "
        '(roles or name globs, e.g. ["bias", "norm"]) get weight_decay 0',
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
        if self.groups is not None or self.no_decay is not None:
            _check_groups(self)
        if self.search:
            check_space(self)
        return self

    def hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments of the torch constructor (the user's values and the fixed ones);
        a grouped entry's also hold ``groups`` and ``no_decay`` as ``group_settings`` gives
        them (the engine's adapter takes them out)."""
        values = self.model_dump(exclude=_NOT_TORCH_ARGUMENTS)
        return {**values, **self.info.fixed, **self.group_settings()}

    def group_settings(self) -> dict[str, Any]:
        """What a run stores of the entry's groups: each group's selector, optimizer and
        every torch keyword argument it trains with (inherited ones included), as JSON."""
        settings: dict[str, Any] = {}
        if self.groups is not None:
            settings["groups"] = [
                {
                    "params": group.params,
                    "name": entry.name,
                    **_json(entry.hyperparameters()),
                    **({"no_decay": group.no_decay} if group.no_decay is not None else {}),
                }
                for group, entry in zip(self.groups, group_entries(self), strict=True)
            ]
        if self.no_decay is not None:
            settings["no_decay"] = self.no_decay
        return settings


_NOT_TORCH_ARGUMENTS = {"name", "label", "schedule", "search", "groups", "no_decay"}


def _json(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# Parameter groups (services/spec/groups.py): the checks that need no model. Which parameters
# each group selects depends on the model, so the job checks that (services/spec/job.py).
def group_entries(entry: OptimizerEntryBase) -> list[OptimizerEntryBase]:
    """Each group of ``entry`` as an entry of its own optimizer: the entry's values under the
    group's where the group trains the entry's own optimizer, that optimizer's defaults under
    them otherwise. ValueError naming the group's field when a value is not allowed."""
    own = entry.model_dump(exclude=_NOT_TORCH_ARGUMENTS)
    out = []
    for index, group in enumerate(entry.groups or ()):
        name = canonical_name(group.name) if group.name is not None else entry.name
        where = f"groups[{index}]"
        if name not in CATALOG:
            allowed = ", ".join(n for n in OPTIMIZER_NAMES if _groupable(n))
            if isinstance(name, str) and name in REFUSED:
                raise ValueError(f"{where}.name: {REFUSED[name]}")
            raise ValueError(
                f"{where}.name: {group.name!r} is an unknown optimizer name; allowed in a group "
                f"(case-insensitive): {allowed}"
            )
        info = CATALOG[name]
        if not _groupable(name):
            raise ValueError(
                f"{where}.name: {name} cannot train a group: "
                + (
                    "its full-batch schedule is the entry's (name it on the entry)"
                    if info.full_batch
                    else "it takes one parameter group and re-evaluates the loss itself"
                )
            )
        given = group.hyperparameters
        unknown = sorted(set(given) - set(info.params))
        if unknown:
            raise ValueError(
                f"{where}: unknown key {', '.join(map(repr, unknown))}; allowed keys: params, "
                f"name, no_decay and {name}'s hyperparameters: {', '.join(info.params)}"
            )
        values = {**(own if name == entry.name else {}), **given}
        try:
            out.append(ENTRY_MODELS[name].model_validate({"name": name, **values}))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"{where}{'.' + field if field else ''}: {message}") from None
    return out


def _groupable(name: str) -> bool:
    info = CATALOG[name]
    return not info.full_batch and info.torch_class != "LBFGS"


def _check_groups(entry: OptimizerEntryBase) -> None:
    if not _groupable(entry.name) and entry.name != "gd":
        raise ValueError(
            f"groups: {entry.info.torch_class} takes one parameter group (its closure "
            "re-evaluates the loss over all of them); drop 'groups' and 'no_decay'"
        )
    groups = entry.groups or []
    for index, group in enumerate(groups):
        try:
            check_selector(group.params, last=index == len(groups) - 1)
        except ValueError as error:
            raise ValueError(f"groups[{index}].{error}") from None
    entries = group_entries(entry)
    for where, no_decay, info in [
        ("no_decay", entry.no_decay, entry.info),
        *(
            (f"groups[{i}].no_decay", g.no_decay, e.info)
            for i, (g, e) in enumerate(zip(groups, entries, strict=True))
        ),
    ]:
        if no_decay is not None:
            try:
                check_selector(no_decay, last=False)
            except ValueError:
                raise ValueError(
                    f"{where}: give roles or name globs; 'rest' selects nothing here"
                ) from None
            if "weight_decay" not in info.params:
                raise ValueError(f"{where}: {info.name} has no weight_decay to turn off")


def resolve_groups(
    name: str, hyperparameters: dict[str, Any], parameters: list[ParameterInfo], where: str = ""
) -> list[ResolvedGroup]:
    """The torch parameter groups of a run of optimizer ``name`` with the stored
    ``hyperparameters`` (``OptimizerEntryBase.hyperparameters``: ``groups`` and ``no_decay``
    among them) on a model with ``parameters``. ``GroupError`` (its message prefixed with
    ``where``) when the groups do not fit the model, or give an optimizer that updates
    matrices only (Muon) a parameter that is not one."""
    own = {k: v for k, v in hyperparameters.items() if k not in ("groups", "no_decay")}
    groups = hyperparameters.get("groups") or []
    resolved = resolve(name, own, groups, hyperparameters.get("no_decay"), parameters, where)
    ndim = {p.name: p for p in parameters}
    for group in resolved:
        info = CATALOG[group.name]
        others = [ndim[n] for n in group.parameters if ndim[n].ndim != 2]
        if info.matrices_only and others:
            index = next(
                (i for i, g in enumerate(groups) if canonical_name(g["name"]) == group.name), None
            )
            place = f"groups[{index}]" if index is not None else "name"
            listed = ", ".join(p.describe() for p in others)
            raise GroupError(
                f"{where}{place}: {info.torch_class} updates 2-D weight matrices only, and would "
                f"get {listed}; give it the hidden matrices and the rest another optimizer, e.g. "
                '"name": "adamw", "groups": [{"params": "matrix", "name": "muon"}] (on a '
                "convolutional model select the linear layers by name: their matrices are "
                f"2-D, the convolutions' 4-D); {describe_model_list(parameters)}"
            )
    return resolved


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
