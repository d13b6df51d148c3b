"""What a job can name: data sets, models, optimizers and schedules, with parameters,
defaults and bounds (read from the spec models, so the catalog cannot drift from them)."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from services.spec import CATALOG, DATASET_MODELS, MODEL_MODELS, REFUSED
from services.spec.groups import REST, ROLES, SELECTOR_HELP, model_parameters
from services.spec.landscapes import LANDSCAPE_MODELS
from services.spec.optimizers import ENTRY_MODELS
from services.spec.schedules import ScheduleSpec

# Entry fields that are not the optimizer's hyperparameters (groups: "parameter_groups" below).
_NOT_PARAMETERS = {"name", "label", "schedule", "groups", "no_decay"}


def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    properties = model.model_json_schema()["properties"]
    return {key: value for key, value in properties.items() if key not in _NOT_PARAMETERS}


def _doc(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0]


def _entry(name: str, model: type[BaseModel], **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra, "description": _doc(model), "parameters": _parameters(model)}


def _task(name: str, model: type[BaseModel]) -> str:
    return "landscape" if name in LANDSCAPE_MODELS else str(getattr(model, "task", ""))


def _model(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """A model's entry, with the parameters (names and roles) its default spec builds: what
    an optimizer entry's ``groups`` select (services/spec/groups.py)."""
    default = model.model_validate({"name": name})
    return {
        **_entry(name, model),
        "named_parameters_of": default.model_dump(mode="json"),
        "named_parameters": [
            {"name": p.name, "role": p.role, "ndim": p.ndim} for p in model_parameters(default)
        ],
    }


def catalog() -> dict[str, Any]:
    schedules = get_args(get_args(ScheduleSpec)[0])
    return {
        "datasets": [
            _entry(name, model, task=_task(name, model)) for name, model in DATASET_MODELS.items()
        ],
        "models": [_model(name, model) for name, model in MODEL_MODELS.items()],
        "optimizers": [
            {
                "name": name,
                "torch_class": info.torch_class,
                "description": info.description,
                "full_batch": info.full_batch,
                "fixed": info.fixed,
                "parameters": _parameters(ENTRY_MODELS[name]),
            }
            for name, info in CATALOG.items()
        ],
        "schedules": [
            _entry(get_args(model.model_fields["name"].annotation)[0], model) for model in schedules
        ],
        "refused_optimizers": REFUSED,
        "parameter_groups": {
            "selectors": SELECTOR_HELP,
            "roles": ROLES | {REST: "every parameter no earlier group took (the last group)"},
            "example": {
                "label": "muon+adamw",
                "name": "adamw",
                "lr": 0.003,
                "weight_decay": 0.01,
                "no_decay": ["bias", "norm"],
                "groups": [{"params": "matrix", "name": "muon", "lr": 0.02}],
            },
        },
        "plugin_optimizers": [],  # what live workers publish: catalog_with_plugins
    }


def plugin_optimizers(available: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The live workers' plugin optimizers (services/plugins.py ``live_optimizers``) as the
    catalog lists them: each with its source package, its parameters' JSON schemas from the
    entry model a job is validated with, and where each parameter's bounds come from
    (``name``: the name's usual range, e.g. lr > 0; ``none``: none known)."""
    from services import plugins

    listed = []
    for name in sorted(available):
        described = available[name]
        model = plugins.entry_model(described)
        listed.append(
            {
                "name": name,
                "source": described["source"],
                "package": described["package"],
                "version": described.get("version", ""),
                "python_class": described.get("class", ""),
                "description": described.get("description", ""),
                "modes": bool(described.get("modes")),
                "refused": described.get("refused"),
                "workers": described.get("workers", 0),
                "parameters": {k: v for k, v in _parameters(model).items() if k != "search"},
                "bounds_from": {
                    key: value.get("bounds_from", "none")
                    for key, value in described["parameters"].items()
                },
            }
        )
    return listed


def catalog_with_plugins(timeout_seconds: float) -> dict[str, Any]:
    """``catalog()`` and the plugin optimizers the live workers publish (a database read)."""
    from services import plugins
    from services.db.session import unit_of_work

    with unit_of_work() as session:
        available = plugins.live_optimizers(session, timeout_seconds)
    return {**catalog(), "plugin_optimizers": plugin_optimizers(available)}
