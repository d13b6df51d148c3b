"""Turn pydantic's validation errors into messages a user can act on.

Each error becomes ``FieldError(field="optimizers[2].momentum", message="...")``: the field
as the user wrote it (tags of the spec's tagged unions are dropped from the path) and a
message that says what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.spec.data import DATASET_MODELS
from services.spec.models import MODEL_MODELS
from services.spec.optimizers import CATALOG, PLUGIN_TAG
from services.spec.schedules import SCHEDULE_NAMES

_UNION_TAGS = {
    "dataset": set(DATASET_MODELS),
    "model": set(MODEL_MODELS),
    "schedule": set(SCHEDULE_NAMES),
}
_PATH_IN_MESSAGE = re.compile(r"^(?P<field>[a-z_]+(\[\d+\])?(\.[a-z_]+)?): (?P<message>.*)$", re.S)
# A path relative to the entry that raised it: an optimizer entry's search space key, one of
# its parameter groups (groups[1].lr) or its no_decay.
_RELATIVE_PATH = re.compile(
    r"^(?P<field>search\.[A-Za-z0-9_.]+|groups(\[\d+\])?[A-Za-z0-9_.\[\]]*|no_decay): "
    r"(?P<message>.*)$",
    re.S,
)


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _path(loc: Sequence[int | str]) -> list[int | str]:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    kept: list[int | str] = []
    for i, part in enumerate(parts):
        after_union = i >= 1 and part in _UNION_TAGS.get(str(parts[i - 1]), ())
        after_entry = (
            i >= 2
            and parts[i - 2] == "optimizers"
            and isinstance(parts[i - 1], int)
            and (part in CATALOG or part == PLUGIN_TAG)
        )
        if not (after_union or after_entry):  # else it is a union's tag, not a field
            kept.append(part)
    return kept


def _render(parts: list[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    result = []
    for error in errors:
        parts = _path(error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        kind = error.get("type")
        if kind == "value_error":
            message = message.removeprefix("Value error, ")
        if kind in ("unknown_optimizer", "union_tag_invalid", "union_tag_not_found"):
            parts.append("name")
            given = error.get("input", {})
            if kind == "unknown_optimizer" and isinstance(given, dict):
                message = f"'{given.get('name')}' is an {message}"
        field = _render(parts)
        nested = _PATH_IN_MESSAGE.match(message)
        relative = _RELATIVE_PATH.match(message)
        if relative and field:
            field, message = f"{field}.{relative['field']}", relative["message"]
        elif nested and nested["field"].startswith(field or "\0"):
            field, message = nested["field"], nested["message"]
        result.append(FieldError(field, message))
    return result
