"""The job spec: plain pydantic, no torch, so the API documents every choice without it."""

from services.spec.data import DATASET_MODELS, DatasetSpec
from services.spec.job import (
    LECTURE_SPEC,
    LECTURE_TUNED_SPEC,
    MODERN_SPEC,
    JobSpec,
    TargetSpec,
    modern_spec,
)
from services.spec.models import MODEL_MODELS, ModelSpec
from services.spec.optimizers import CATALOG, REFUSED, OptimizerEntry, OptimizerInfo
from services.spec.validation import FieldError, field_errors

__all__ = [
    "CATALOG",
    "DATASET_MODELS",
    "LECTURE_SPEC",
    "LECTURE_TUNED_SPEC",
    "MODEL_MODELS",
    "MODERN_SPEC",
    "REFUSED",
    "DatasetSpec",
    "FieldError",
    "JobSpec",
    "ModelSpec",
    "OptimizerEntry",
    "OptimizerInfo",
    "TargetSpec",
    "field_errors",
    "modern_spec",
]
