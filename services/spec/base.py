"""The base of every spec model: unknown keys are errors that list the allowed keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


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
