"""The base of every spec model: unknown keys are errors that list the allowed keys, and no
string field takes control characters (services/spec/text.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from services.spec.text import refuse_control_characters


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" says only "Extra inputs are not permitted"; a user
        # needs to know what *is* allowed, so this message lists the keys.
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                allowed = ", ".join(cls.model_fields)
                noun = "key" if len(unknown) == 1 else "keys"
                raise ValueError(
                    f"unknown {noun} {', '.join(map(repr, unknown))}; allowed keys: {allowed}"
                )
        return data

    @field_validator("*")
    @classmethod
    def _refuse_control_characters(cls, value: Any) -> Any:
        # On every field of every subclass, once the field's own checks passed (a pattern or
        # a Literal already refuses them, with its own message): free text, and lists of it.
        # Nested models check their own fields. A dict's keys are text too (a search
        # space's hyperparameter names, per-label budgets), and its values where they are.
        if isinstance(value, dict):
            texts: Any = [*value, *value.values()]
        else:
            texts = value if isinstance(value, list | tuple) else (value,)
        for text in texts:
            if isinstance(text, str):
                refuse_control_characters(text)
        return value
