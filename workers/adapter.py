"""The stored job as the engine takes it: its spec and runs become the frozen ``JobConfig``.

``load_job`` is what a part calls (workers/execution.py): it reads the job, validates its
stored spec once, and returns the ``Experiment`` built from it together with the spec's
target (the part's Prometheus labels), so that nothing validates the spec again for that
part. ``job_config`` and ``dataset_config`` are the translation itself, from a validated
spec: data files and uploads are resolved here, the engine sees parameters only.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.orm import Session

from services import uploads
from services.db import store
from services.db.models import TRIAL, Job, Run
from services.db.session import unit_of_work
from services.settings import Settings
from services.spec import CATALOG, JobSpec, OptimizerEntry, TargetSpec
from services.spec.groups import ParameterInfo, model_parameters
from services.spec.optimizers import plugin_info, resolve_groups
from services.study.phases import BASELINE_SUFFIX
from services.study.pruning import to_prune
from workers.engine import (
    DatasetConfig,
    Experiment,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
)
from workers.engine.config import ParameterGroupConfig, PruningConfig


def pick_device(setting: str) -> str:
    """The torch device for ``OPTBENCH_DEVICE`` (``auto``: CUDA when this worker sees it)."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("OPTBENCH_DEVICE=cuda but this worker sees no CUDA device")
    return setting


@dataclass(frozen=True)
class LoadedJob:
    """A stored job ready to train: the Experiment (its data loaded) and the spec's target,
    both from one validation of the stored spec."""

    experiment: Experiment
    target: TargetSpec


def load_job(job_key: uuid.UUID, device: str, settings: Settings) -> LoadedJob:
    """Read the job, validate its spec once, and build the engine's Experiment on ``device``."""
    with unit_of_work() as session:
        job = store.get_job(session, job_key)
        spec = JobSpec.model_validate(job.spec)
        config = job_config(session, job, spec, device, settings)
    return LoadedJob(Experiment(config), spec.effective_target)


_SPLIT_KEYS = {"name", "val_fraction", "test_fraction", "seed"}
FILE_DATASETS = frozenset({"mnist", "fashion_mnist", "cifar10"})
CACHED_DATASETS = frozenset({"mnist1d"})  # generated slowly: kept under <home>/cache


def dataset_config(session: Session, spec: JobSpec, settings: Settings) -> DatasetConfig:
    """The engine's view of the data set: parameters only, files and uploads resolved here."""
    data = spec.dataset
    params = data.model_dump(exclude=_SPLIT_KEYS, mode="json")
    if data.name in FILE_DATASETS:  # type: ignore[attr-defined]
        params["folder"] = str(settings.resolved_data_dir)
    if data.name in CACHED_DATASETS:  # type: ignore[attr-defined]
        params["cache"] = str(settings.home / "cache")
    if data.name == "upload":  # type: ignore[attr-defined]
        params = {"npz": uploads.load_dataset_bytes(session, params.pop("id"))}
    return DatasetConfig(
        name=data.name,  # type: ignore[attr-defined]
        params=params,
        val_fraction=getattr(data, "val_fraction", 0.0),
        test_fraction=getattr(data, "test_fraction", 0.0),
        seed=getattr(data, "seed", 0),
    )


def job_config(
    session: Session, job: Job, spec: JobSpec, device: str, settings: Settings
) -> JobConfig:
    """Translate the job's validated ``spec`` and its stored runs into the engine's frozen
    configuration."""
    entries = {entry.display_label: entry for entry in spec.optimizers}
    parameters = model_parameters(spec.model)
    runs = tuple(_run_config(run, entries, parameters) for run in job.runs)
    return JobConfig(
        dataset=dataset_config(session, spec, settings),
        model=ModelConfig(spec.model.name, spec.model.model_dump(exclude={"name"})),
        runs=runs,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        flush_every=settings.flush_every_steps,
        device=device,
        eval_every_steps=spec.eval_every_steps,
        divergence_ratio=spec.divergence_ratio,
        mixed_precision=spec.mixed_precision,
        fuse="auto" if spec.execution.fuse else "never",
        dtype=spec.execution.dtype,
        checkpoint_every_steps=settings.checkpoint_every_steps,
        checkpoint_min_seconds=settings.checkpoint_min_seconds,
        pruning=_pruning(spec),
    )


def _run_config(
    run: Run, entries: dict[str, OptimizerEntry], parameters: list[ParameterInfo]
) -> RunConfig:
    """A stored run as the engine takes it. A study's runs carry their own setting: a
    searched schedule is stored under ``schedule`` in their hyperparameters, and a baseline's
    label (``<label>:one-shot``) names the entry it comes from. A grouped entry's ``groups``
    and ``no_decay`` become the engine's parameter groups, by parameter name."""
    hyperparameters = dict(run.hyperparameters)
    schedule = hyperparameters.pop("schedule", None)
    groups = parameter_groups(run.optimizer, hyperparameters, parameters)
    hyperparameters.pop("groups", None)
    hyperparameters.pop("no_decay", None)
    entry = entries.get(run.label) or entries[run.label.removesuffix(BASELINE_SUFFIX)]
    # A plugin's class is named by its name, "<source>:<Name>" (workers/engine/
    # optimizer_classes.py resolves it).
    info = CATALOG.get(run.optimizer) or plugin_info(run.optimizer)
    return RunConfig(
        key=run.id,
        seed=run.seed,
        optimizer=OptimizerConfig(
            label=run.label,
            name=run.optimizer,
            torch_class=info.torch_class,
            hyperparameters=hyperparameters,
            full_batch=info.full_batch,
            schedule=schedule or _schedule(entry),
            groups=groups,
        ),
        trial=run.role == TRIAL,
    )


def parameter_groups(
    name: str, hyperparameters: dict[str, Any], parameters: list[ParameterInfo]
) -> tuple[ParameterGroupConfig, ...]:
    """The engine's parameter groups of a run of optimizer ``name`` with these stored
    hyperparameters (none for an entry without ``groups`` or ``no_decay``)."""
    if "groups" not in hyperparameters and "no_decay" not in hyperparameters:
        return ()
    return tuple(
        ParameterGroupConfig(
            name=group.name,
            torch_class=CATALOG[group.name].torch_class,
            hyperparameters={**group.hyperparameters, **CATALOG[group.name].fixed},
            parameters=group.parameters,
        )
        for group in resolve_groups(name, hyperparameters, parameters)
    )


def _decide(
    scores: Mapping[int, float | None], higher: bool, *, rule: str, reduction_factor: int
) -> set[int]:
    return to_prune(rule, scores, higher=higher, reduction_factor=reduction_factor)


def _pruning(spec: JobSpec) -> PruningConfig | None:
    """A study's pruning rule at its rungs, on the selection metric's epoch column."""
    if spec.tuning is None or spec.tuning.pruning is None:
        return None
    pruning, metric = spec.tuning.pruning, spec.selection_metric
    return PruningConfig(
        decide=functools.partial(
            _decide, rule=pruning.rule, reduction_factor=pruning.reduction_factor
        ),
        rungs=tuple(pruning.rungs(spec.epochs)),
        column=metric.replace("_r2", "_accuracy"),
        higher_is_better=metric.endswith(("accuracy", "r2")),
    )


def _schedule(entry: OptimizerEntry) -> dict[str, Any] | None:
    return entry.schedule.model_dump() if entry.schedule else None
