"""Tuning studies in the spec: an optimizer entry's ``search`` space and the job's ``tuning``
protocol (services/study/ runs them).

    {"name": "adam", "lr": 0.001,
     "search": {"lr": {"log_uniform": [1e-4, 1e-1]}, "betas.0": {"uniform": [0.8, 0.99]}}}
    "tuning": {"trials": 16, "sampler": "quasirandom",
               "pruning": {"rule": "successive_halving", "min_epochs": 1,
                           "reduction_factor": 3},
               "rerun_seeds": 5, "baseline": true}

A search names any hyperparameter of its entry (``betas.0`` for one element of a pair), of
its schedule (``schedule.warmup_steps``) or of one of its parameter groups (``groups.0.lr``:
the first group's; services/spec/groups.py). Each distribution is checked against the
hyperparameter's own bounds: its ends (or every listed value) must be values the entry
accepts, so a bad space is a 422 naming the field and the allowed range. The entry's given
values are its one-shot setting: with ``baseline`` they are rerun beside the tuned setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from services.spec.base import StrictModel
from services.spec.text import refuse_control_characters

Number = float | int
Value = bool | int | float | str | None


class Distribution(BaseModel):
    """Exactly one of: ``log_uniform`` [lo, hi] (lo > 0), ``uniform`` [lo, hi], ``int``
    [lo, hi] (inclusive), ``choice`` [values...] or ``grid`` [values...] (the grid sampler
    takes every combination of the grids; the other samplers treat a grid as a choice)."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(default=None, alias="int")
    choice: list[Value] | None = Field(default=None, min_length=1, max_length=256)
    grid: list[Value] | None = Field(default=None, min_length=1, max_length=256)

    # Not a StrictModel: "int" is a field's alias here, and _one_kind names the allowed keys.
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in data if k in _KINDS]
            unknown = sorted(set(data) - set(_KINDS))
            if unknown or len(kinds) != 1:
                raise ValueError(
                    "a distribution is one of "
                    + ", ".join(f'{{"{k}": ...}}' for k in _KINDS)
                    + f"; got keys {sorted(data)}"
                )
        return data

    @field_validator("choice", "grid")
    @classmethod
    def _refuse_control_characters(cls, values: list[Value] | None) -> list[Value] | None:
        # What StrictModel does for its fields (this model is not one): listed text values
        # with a control character are refused as such, not only as values the
        # hyperparameter does not take (and some, say a label, could take any text).
        for value in values or ():
            if isinstance(value, str):
                refuse_control_characters(value)
        return values

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        for kind in ("log_uniform", "uniform", "int_"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                name = kind.rstrip("_")
                raise ValueError(f"{name}: [lo, hi] needs lo < hi, got {list(bounds)}")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform: lo must be > 0, got {self.log_uniform[0]}")
        return self

    @model_serializer(mode="plain")
    def _as_written(self) -> dict[str, Any]:
        """As the user writes it: the one kind set, ``int`` under its own name."""
        return {self.kind: self.values}

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, _ATTR[k]) is not None)

    @property
    def values(self) -> list[Any]:
        """The values that bound it (both ends, or every listed value): what is checked."""
        return list(getattr(self, _ATTR[self.kind]))


_KINDS = ("log_uniform", "uniform", "int", "choice", "grid")
_ATTR = {
    "log_uniform": "log_uniform",
    "uniform": "uniform",
    "int": "int_",
    "choice": "choice",
    "grid": "grid",
}


class PruningSpec(StrictModel):
    """Stop trials early at epoch rungs: min_epochs, min_epochs x factor, ... (before the
    last epoch). ``successive_halving`` keeps the best 1/reduction_factor of each
    optimizer's trials still training at a rung; ``median`` stops a trial whose best score
    so far is worse than the median of its optimizer's trials at that rung."""

    rule: Literal["successive_halving", "median"] = "successive_halving"
    min_epochs: int = Field(1, ge=1, le=10_000)
    reduction_factor: int = Field(3, ge=2, le=10)

    def rungs(self, epochs: int) -> list[int]:
        out, rung = [], self.min_epochs
        while rung < epochs:
            out.append(rung)
            rung *= self.reduction_factor
        return out


class TuningSpec(StrictModel):
    """The study protocol: per optimizer entry with a ``search``, ``trials`` settings drawn by
    ``sampler`` and trained (fused) on the first seed; selection on the validation split (the
    ``metric`` at its best epoch; default the job's target metric); the best setting of each
    entry rerun on ``rerun_seeds`` fresh seeds (seeds the search never used, the same for
    every entry: common random numbers); the test split is read for those reruns only."""

    trials: int | dict[str, int] = Field(
        16,
        description="settings tried per optimizer entry (equal budgets), or per label",
    )
    sampler: Literal["grid", "random", "quasirandom", "tpe"] = "quasirandom"
    metric: Literal["val_accuracy", "val_r2", "val_loss", "train_loss", "distance"] | None = Field(
        None, description="selection metric; default: the job's target metric"
    )
    pruning: PruningSpec | None = None
    rerun_seeds: int = Field(5, ge=1, le=32)
    baseline: bool = Field(True, description="rerun each entry's given values beside it")
    round_size: int | None = Field(
        None, ge=1, le=256, description="tpe: trials per round (default: trials / 4)"
    )

    @model_validator(mode="after")
    def _budget(self) -> TuningSpec:
        budgets = self.trials.values() if isinstance(self.trials, dict) else [self.trials]
        for budget in budgets:
            if not 1 <= budget <= 512:
                raise ValueError(f"trials: each budget is between 1 and 512, got {budget}")
        return self

    def budget(self, label: str) -> int:
        if isinstance(self.trials, dict):
            return self.trials.get(label, 0)
        return self.trials


def apply(entry: Any, values: dict[str, Any]) -> Any:
    """The entry with ``values`` (search keys: ``lr``, ``betas.0``, ``schedule.warmup_steps``)
    put in place, validated again (``entry``: an optimizer entry model)."""
    data = entry.model_dump(exclude={"search"}, mode="json")
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head == "schedule":
            data["schedule"] = {**data["schedule"], rest: value}
        elif head == "groups":
            index, _, name = rest.partition(".")
            groups = list(data["groups"])
            groups[int(index)] = {**groups[int(index)], name: value}
            data["groups"] = groups
        elif rest:
            items = list(data[head])
            items[int(rest)] = value
            data[head] = items
        else:
            data[head] = value
    return type(entry).model_validate(data)


def _constraints(metadata: Any) -> str | None:
    """'0 < x <= 1e+06' from pydantic's Gt/Ge/Lt/Le metadata (None if there is none)."""
    low = high = ""
    for item in metadata or []:
        for name, sign in (("gt", "<"), ("ge", "<=")):
            if getattr(item, name, None) is not None:
                low = f"{getattr(item, name):g} {sign} "
        for name, sign in (("lt", "<"), ("le", "<=")):
            if getattr(item, name, None) is not None:
                high = f" {sign} {getattr(item, name):g}"
    return f"{low}x{high}" if low or high else None


def allowed_range(entry: Any, key: str) -> str | None:
    """The range a searched hyperparameter accepts, as text (``betas.0``: one element's)."""
    import typing

    head, _, rest = key.partition(".")
    if head == "groups":
        from services.spec.optimizers import group_entries

        index, _, name = rest.partition(".")
        group = type(group_entries(entry)[int(index)])
        field = group.model_fields.get(name)
        return _constraints(field.metadata) if field is not None else None
    model = type(entry.schedule) if head == "schedule" and entry.schedule else type(entry)
    field = model.model_fields.get(rest if head == "schedule" else head)
    if field is None:
        return None
    if rest and head != "schedule":
        args = typing.get_args(field.annotation)
        if not args or int(rest) >= len(args):
            return None
        element = typing.get_args(args[int(rest)])
        return _constraints(getattr(element[1], "metadata", None)) if len(element) > 1 else None
    return _constraints(field.metadata)


def check_space(entry: Any) -> None:
    """Every search key names a hyperparameter of the entry (or of its schedule), and every
    bound of its distribution is a value that hyperparameter accepts; ValueError naming the
    field and its allowed range otherwise."""
    from pydantic import ValidationError

    allowed = [
        k
        for k in type(entry).model_fields
        if k not in ("name", "label", "schedule", "search", "groups", "no_decay")
    ]
    for key, distribution in (entry.search or {}).items():
        head, _, rest = key.partition(".")
        current: Any
        if head == "groups":
            current = _group_value(entry, key)
        elif head == "schedule":
            if entry.schedule is None or rest not in type(entry.schedule).model_fields:
                fields = sorted(type(entry.schedule).model_fields) if entry.schedule else []
                raise ValueError(
                    f"search.{key}: the entry's schedule has no '{rest}'"
                    + (
                        f" (its fields: {', '.join(f for f in fields if f != 'name')})"
                        if fields
                        else " (the entry has no schedule)"
                    )
                )
        elif head not in allowed:
            raise ValueError(
                f"search.{key}: '{head}' is not a hyperparameter of {entry.name}; "
                f"searchable: {', '.join(allowed)}"
            )
        elif rest and not (
            rest.isdigit()
            and isinstance(getattr(entry, head), tuple)
            and int(rest) < len(getattr(entry, head))
        ):
            raise ValueError(f"search.{key}: '{head}' has no element {rest}")
        if head == "schedule":
            current = getattr(entry.schedule, rest)
        elif head != "groups":
            current = getattr(entry, head)
            current = current[int(rest)] if rest else current
        if (
            distribution.kind in ("log_uniform", "uniform")
            and isinstance(current, bool | int)
            and not isinstance(current, float)
        ):
            raise ValueError(
                f"search.{key}: '{key}' takes whole numbers or booleans; use "
                '{"int": [lo, hi]} or {"choice": [...]}'
            )
        for value in distribution.values:
            try:
                apply(entry, {key: value})
            except (ValidationError, ValueError, TypeError) as error:
                reason = error.errors()[0]["msg"] if isinstance(error, ValidationError) else error
                bounds = allowed_range(entry, key)
                accepts = f"allowed: {bounds.replace('x', key, 1)}" if bounds else reason
                raise ValueError(
                    f"search.{key}: {value!r} is outside what {key} accepts ({accepts})"
                ) from None


def _group_value(entry: Any, key: str) -> Any:
    """The value a group's searched hyperparameter (``groups.<index>.<name>``) has now;
    ValueError naming the groups and their hyperparameters when the key names neither."""
    from services.spec.optimizers import group_entries

    _, _, rest = key.partition(".")
    index, _, name = rest.partition(".")
    groups = group_entries(entry)
    if not (index.isdigit() and int(index) < len(groups)):
        raise ValueError(
            f"search.{key}: the entry has {len(groups)} parameter group(s); name one as "
            "groups.<index>.<hyperparameter>, e.g. groups.0.lr"
        )
    group = groups[int(index)]
    searchable = [k for k in group.info.params]
    if name not in searchable:
        raise ValueError(
            f"search.{key}: '{name}' is not a hyperparameter of groups[{index}] ({group.name}); "
            f"searchable: {', '.join(searchable)}"
        )
    return getattr(group, name)
