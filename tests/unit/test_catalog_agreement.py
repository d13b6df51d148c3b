"""The spec's optimizer catalog (no torch) and torch.optim agree."""

from __future__ import annotations

import inspect

import pytest
import torch

from services.spec import CATALOG, REFUSED
from services.spec.optimizers import ENTRY_MODELS
from workers.engine import OptimizerConfig
from workers.engine.optimizers import build

# Switches of the implementation, not of the mathematics; optbench always minimises.
NOT_HYPERPARAMETERS = {
    "params",
    "self",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "maximize",
}
# Catalog defaults that deliberately differ from torch's: the alias *is* the difference.
ALIAS_DEFAULTS = {("momentum", "momentum"): 0.9, ("nag", "momentum"): 0.9}


def torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    return {
        name: cls
        for name, cls in vars(torch.optim).items()
        if isinstance(cls, type)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
    }


def test_every_torch_optimizer_is_in_the_catalog_or_refused_with_a_reason() -> None:
    covered = {info.torch_class.lower() for info in CATALOG.values()} | set(REFUSED)
    missing = sorted(name for name in torch_optimizers() if name.lower() not in covered)
    assert not missing, f"add these to services/spec/optimizers.py: {missing}"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_entry_matches_torch_signature_and_defaults(name: str) -> None:
    info = CATALOG[name]
    signature = inspect.signature(getattr(torch.optim, info.torch_class).__init__)
    for key, param in info.params.items():
        assert key in signature.parameters, f"{name}.{key} is not an argument of {info.torch_class}"
        torch_default = signature.parameters[key].default
        expected = ALIAS_DEFAULTS.get((name, key), torch_default)
        assert param.default == expected, f"{name}.{key}: catalog {param.default} != {expected}"
    real = {p for p in signature.parameters if p not in NOT_HYPERPARAMETERS}
    if not info.full_batch and name not in ("momentum", "nag"):  # presets expose a subset
        assert set(info.params) | set(info.fixed) == real, f"{name} lacks {real - set(info.params)}"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_constructs_in_torch_with_its_defaults(name: str) -> None:
    entry = ENTRY_MODELS[name].model_validate({"name": name})
    info = CATALOG[name]
    config = OptimizerConfig(name, name, info.torch_class, entry.hyperparameters(), info.full_batch)
    optimizer = build(config, [torch.nn.Parameter(torch.zeros(3, 2))])
    assert type(optimizer).__name__ == info.torch_class
    for key, value in entry.hyperparameters().items():
        stored = optimizer.param_groups[0][key]
        if value is None and key == "max_eval":
            assert stored == entry.hyperparameters()["max_iter"] * 5 // 4  # torch derives it
        else:
            assert stored == value, key


def test_every_spec_model_is_an_engine_model_and_back() -> None:
    from services.spec import MODEL_MODELS
    from workers.engine.models import MODELS

    assert set(MODEL_MODELS) - {"point"} == set(MODELS.names())  # point: the landscapes' model


def test_every_landscape_spec_builds_its_engine_function_with_defaults() -> None:
    from services.spec.landscapes import LANDSCAPE_MODELS
    from workers.engine.landscapes import LANDSCAPES

    assert set(LANDSCAPE_MODELS) == set(LANDSCAPES.names())
    for name, model in LANDSCAPE_MODELS.items():
        spec = model.model_validate({"name": name})
        params = spec.model_dump(exclude={"name", "start"})
        value = LANDSCAPES.get(name)(**params)(torch.tensor(spec.start, dtype=torch.float64))
        assert torch.isfinite(value), name


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "step", "step_size": 3},
        {"name": "multistep", "milestones": [2, 4]},
        {"name": "exponential", "gamma": 0.9},
        {"name": "cosine"},
        {"name": "warmup_cosine", "warmup_steps": 2},
        {"name": "onecycle", "max_lr": 0.1},
        {"name": "plateau"},
    ],
)
def test_every_schedule_spec_builds_a_torch_scheduler(schedule: dict[str, object]) -> None:
    from pydantic import TypeAdapter

    from services.spec.schedules import SCHEDULE_NAMES, ScheduleSpec
    from workers.engine import schedules

    spec = TypeAdapter(ScheduleSpec).validate_python(schedule)
    assert spec.name in SCHEDULE_NAMES
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    scheduler = schedules.build(spec.model_dump(), optimizer, total_steps=10)
    assert scheduler is not None
    for _ in range(10):
        optimizer.step()
        if schedules.steps_per_epoch_only(scheduler):
            scheduler.step(1.0)  # type: ignore[arg-type]
        else:
            scheduler.step()  # type: ignore[call-arg]
