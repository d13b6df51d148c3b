"""The suite spec: one optimizer set, tuned by one protocol, over many workloads (issue 15).

    {"name": "lecture suite",
     "workloads": [{"name": "digits-mlp", "dataset": {"name": "digits"},
                    "model": {"name": "mlp", "hidden": [64]}, "batch_size": 64, "epochs": 8,
                    "target": {"metric": "val_accuracy", "value": 0.96}}, ...],
     "optimizers": [{"name": "adam", "lr": 0.001,
                     "search": {"lr": {"log_uniform": [3e-4, 3e-2]}}}, ...],
     "tuning": {"trials": 16, "rerun_seeds": 3, "baseline": false},
     "studies": 3, "time_measure": "steps", "reference": "adam", "r_max": 4.0}

A suite runs one tuning study per workload and study (``job_specs``): each is an ordinary
job (a JobSpec with the suite's optimizers and tuning block), so it trains as its own fused
groups and its runs are stored and summarised as any study's. AlgoPerf's rule that every
workload gets the same tuning protocol is kept by construction: there is one ``optimizers``
list and one ``tuning`` block. Scoring: services/suite/scores.py.

Study ``k`` searches on seed ``k * (rerun_seeds + 1)`` and reruns on the seeds after it, so
no two studies share a seed (the sampler is seeded from the job's seed: services/study/).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from services.spec.base import StrictModel
from services.spec.data import DatasetSpec
from services.spec.job import LECTURE_SPEC, LECTURE_TUNED_RANGES, JobSpec, TargetSpec
from services.spec.models import ModelSpec
from services.spec.optimizers import OptimizerEntry
from services.spec.tuning import TuningSpec
from services.spec.validation import field_errors

TimeMeasure = Literal["steps", "seconds"]


class WorkloadSpec(StrictModel):
    """One workload: a data set and model trained as in a job, with its own target."""

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="short and unique in the suite, e.g. digits-mlp",
    )
    dataset: DatasetSpec
    model: ModelSpec
    batch_size: int = Field(64, ge=1, le=65_536)
    epochs: int = Field(10, ge=1, le=10_000)
    target: TargetSpec = Field(
        description="required: time to target is what a suite scores (metric and value)"
    )


class SuiteSpec(StrictModel):
    """A suite: ``optimizers`` (with their ``search`` spaces) tuned by ``tuning`` on each
    workload, ``studies`` times, scored on ``time_measure`` (services/suite/scores.py)."""

    name: str = Field("suite", min_length=1, max_length=200)
    workloads: list[WorkloadSpec] = Field(min_length=1, max_length=32)
    optimizers: list[OptimizerEntry] = Field(min_length=1, max_length=64)
    tuning: TuningSpec
    studies: int = Field(1, ge=1, le=10, description="independent tuning studies per workload")
    time_measure: TimeMeasure = Field(
        "steps",
        description="steps (optimizer steps; the default, since fused training shares wall "
        "time between members) or seconds (each member's attributed training seconds)",
    )
    reference: str | None = Field(
        None, description="optimizer label the speedups are against (default: the first entry)"
    )
    r_max: float = Field(4.0, gt=1.0, le=100.0, description="upper end of the profile's τ")

    @model_validator(mode="after")
    def _check(self) -> SuiteSpec:
        names = [w.name for w in self.workloads]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(
                    f"workloads[{index}].name: '{name}' is already workloads"
                    f"[{names.index(name)}]'s name; give each workload its own name"
                )
        labels = [entry.display_label for entry in self.optimizers]
        if self.reference is not None and self.reference not in labels:
            raise ValueError(
                f"reference: '{self.reference}' is not an optimizer entry's label; use one of "
                f"{', '.join(labels)}"
            )
        for index in range(len(self.workloads)):
            try:
                JobSpec.model_validate(self.job_spec(index, 0))
            except ValidationError as error:
                first = field_errors(error.errors())[0]
                raise ValueError(f"workloads[{index}] ({names[index]}): {first}") from None
        return self

    @property
    def reference_label(self) -> str:
        return self.reference or self.optimizers[0].display_label

    @property
    def labels(self) -> list[str]:
        return [entry.display_label for entry in self.optimizers]

    def study_seed(self, study: int) -> int:
        return study * (self.tuning.rerun_seeds + 1)

    def job_spec(self, index: int, study: int) -> dict[str, Any]:
        """The tuning study of workload ``index``, study ``study``, as a JobSpec's JSON."""
        workload = self.workloads[index]
        return {
            "name": f"{self.name}: {workload.name}, study {study}",
            "dataset": workload.dataset.model_dump(mode="json"),
            "model": workload.model.model_dump(mode="json"),
            "optimizers": [entry.model_dump(mode="json") for entry in self.optimizers],
            "epochs": workload.epochs,
            "batch_size": workload.batch_size,
            "seeds": [self.study_seed(study)],
            "target": workload.target.model_dump(mode="json"),
            "tuning": self.tuning.model_dump(mode="json", exclude_none=True),
        }

    def job_specs(self) -> list[tuple[str, int, dict[str, Any]]]:
        """``(workload name, study, JobSpec JSON)`` of every child job, workloads outer."""
        return [
            (workload.name, study, self.job_spec(index, study))
            for index, workload in enumerate(self.workloads)
            for study in range(self.studies)
        ]


def _searched(entry: dict[str, Any]) -> dict[str, Any]:
    low, high = LECTURE_TUNED_RANGES[entry["name"]]
    return {**entry, "search": {"lr": {"log_uniform": [low, high]}}}


# The built-in suite (issue 15): the lecture's eight optimizers, each learning rate searched
# over LECTURE_TUNED_RANGES (two decades around the lecture's value), on six small workloads
# of the catalog, each with a target most tuned optimizers reach within its epochs (so that
# times to target, not only misses, separate them). One protocol for all: 16 quasirandom
# trials per optimizer (the tuned preset's), the best rerun on 3 fresh seeds (DeepOBS speed),
# no one-shot baseline (the suite scores the tuned optimizers). No pruning: a rung is an
# epoch, and the landscape's epochs are single steps, where halving at epoch 2 would judge on
# noise. Three
# studies per workload, as AlgoPerf runs, so that t(s, w) is a median of three searches.
# Budget measured through `optbench suite lecture` in README ("Suites").
LECTURE_SUITE: dict[str, Any] = {
    "name": "lecture suite: 8 optimizers on 6 workloads",
    "workloads": [
        {
            "name": "digits-mlp",
            "dataset": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [64]},
            "batch_size": 64,
            "epochs": 8,
            "target": {"metric": "val_accuracy", "value": 0.96},
        },
        {
            "name": "mnist1d-mlp",
            "dataset": {"name": "mnist1d", "n_samples": 3000},
            "model": {"name": "mlp", "hidden": [64]},
            "batch_size": 64,
            "epochs": 8,
            "target": {"metric": "val_accuracy", "value": 0.38},
        },
        {
            "name": "moons-mlp",
            "dataset": {"name": "moons", "n_samples": 1000, "noise": 0.2},
            "model": {"name": "mlp", "hidden": [32]},
            "batch_size": 32,
            "epochs": 8,
            "target": {"metric": "val_accuracy", "value": 0.97},
        },
        {
            "name": "wine-linear",
            "dataset": {"name": "wine"},
            "model": {"name": "linear"},
            "batch_size": 16,
            "epochs": 8,
            "target": {"metric": "val_accuracy", "value": 1.0},
        },
        {
            "name": "cancer-linear",
            "dataset": {"name": "breast_cancer"},
            "model": {"name": "linear"},
            "batch_size": 32,
            "epochs": 8,
            "target": {"metric": "val_accuracy", "value": 0.98},
        },
        {
            "name": "quadratic-point",
            "dataset": {"name": "quadratic"},
            "model": {"name": "point"},
            "batch_size": 1,
            "epochs": 200,
            "target": {"metric": "distance", "value": 0.05},
        },
    ],
    "optimizers": [_searched(entry) for entry in LECTURE_SPEC["optimizers"]],
    "tuning": {
        "trials": 16,
        "sampler": "quasirandom",
        "rerun_seeds": 3,
        "baseline": False,
    },
    "studies": 3,
    "time_measure": "steps",
    "reference": "adam",
    "r_max": 4.0,
}

SUITE_PRESETS: dict[str, dict[str, Any]] = {"lecture": LECTURE_SUITE}


def shrunk(
    spec: dict[str, Any],
    *,
    epochs: int | None = None,
    trials: int | None = None,
    studies: int | None = None,
    rerun_seeds: int | None = None,
) -> dict[str, Any]:
    """A suite spec with a smaller budget for a quick look (CLI options, CI): ``epochs``
    caps each workload's epochs (a landscape's epochs are steps: scaled by the same factor
    as the largest sample workload's), ``trials`` and ``rerun_seeds`` replace the tuning
    block's, ``studies`` the suite's."""
    out = {**spec, "workloads": [dict(w) for w in spec["workloads"]]}
    if epochs is not None:
        sample = [w["epochs"] for w in out["workloads"] if w["model"]["name"] != "point"]
        factor = epochs / max(sample) if sample else 1.0
        for workload in out["workloads"]:
            if workload["model"]["name"] == "point":
                workload["epochs"] = max(1, round(workload["epochs"] * min(1.0, factor)))
            else:
                workload["epochs"] = min(workload["epochs"], epochs)
    tuning = dict(out["tuning"])
    if trials is not None:
        tuning["trials"] = trials
    if rerun_seeds is not None:
        tuning["rerun_seeds"] = rerun_seeds
    out["tuning"] = tuning
    if studies is not None:
        out["studies"] = studies
    return out
