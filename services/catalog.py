"""What a job can name: data sets, models and optimizers with parameters, defaults and bounds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.spec import CATALOG, DATASET_MODELS, MODEL_MODELS, REFUSED
from services.spec.optimizers import ENTRY_MODELS

_NOT_PARAMETERS = {"name", "label"}


def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    properties = model.model_json_schema()["properties"]
    return {key: value for key, value in properties.items() if key not in _NOT_PARAMETERS}


def catalog() -> dict[str, Any]:
    return {
        "datasets": [
            {
                "name": name,
                "description": (model.__doc__ or "").strip(),
                "parameters": _parameters(model),
            }
            for name, model in DATASET_MODELS.items()
        ],
        "models": [
            {
                "name": name,
                "description": (model.__doc__ or "").strip(),
                "parameters": _parameters(model),
            }
            for name, model in MODEL_MODELS.items()
        ],
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
        "refused_optimizers": REFUSED,
    }
