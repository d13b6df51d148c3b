"""The suite spec (services/spec/suite.py): validation that says what to change, the child
job specs, the built-in suite and the budget shrinking the CLI offers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from services.spec import JobSpec
from services.spec.job import LECTURE_TUNED_RANGES
from services.spec.suite import LECTURE_SUITE, SuiteSpec, shrunk


def suite(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(LECTURE_SUITE)
    spec.update(changes)
    return spec


def error_of(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        SuiteSpec.model_validate(spec)
    return str(caught.value)


def test_the_built_in_suite_is_valid_and_fits_the_issue() -> None:
    spec = SuiteSpec.model_validate(LECTURE_SUITE)
    assert len(spec.workloads) >= 5
    assert spec.labels == ["gd", "sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"]
    for entry in spec.optimizers:  # the lecture's tuned ranges, the same budget for each
        bounds = entry.search["lr"].values  # type: ignore[index]
        assert tuple(bounds) == LECTURE_TUNED_RANGES[entry.name]
    assert isinstance(spec.tuning.trials, int)
    assert {w.dataset.name for w in spec.workloads} >= {  # type: ignore[attr-defined]
        "digits", "mnist1d", "moons", "wine", "breast_cancer"
    }  # fmt: skip
    assert any(w.target.metric == "distance" for w in spec.workloads)
    assert spec.reference_label == "adam"


def test_job_specs_are_one_study_per_workload_and_study_on_distinct_seeds() -> None:
    spec = SuiteSpec.model_validate(suite(studies=2))
    children = spec.job_specs()
    assert [(w, s) for w, s, _ in children][:2] == [("digits-mlp", 0), ("digits-mlp", 1)]
    assert len(children) == 2 * len(spec.workloads)
    seeds = set()
    for _, _, job in children:
        parsed = JobSpec.model_validate(job)
        assert parsed.tuning is not None and parsed.tuning == spec.tuning
        seeds.update(parsed.seeds + parsed.rerun_seeds)
    per_study = 1 + spec.tuning.rerun_seeds
    assert seeds == set(range(2 * per_study))  # no two studies share a seed


def test_a_target_that_does_not_fit_its_data_set_names_the_workload() -> None:
    spec = suite()
    spec["workloads"][5]["target"] = {"metric": "val_accuracy", "value": 0.9}
    message = error_of(spec)
    assert "workloads[5] (quadratic-point): target.metric: 'val_accuracy' does not fit" in message
    assert "use one of distance" in message


def test_a_reference_that_is_not_an_entry_lists_the_labels() -> None:
    assert "reference: 'adamm' is not an optimizer entry's label; use one of gd, sgd" in error_of(
        suite(reference="adamm")
    )


def test_workload_names_are_unique_and_targets_required() -> None:
    spec = suite()
    spec["workloads"][1]["name"] = "digits-mlp"
    assert "workloads[1].name: 'digits-mlp' is already workloads[0]'s name" in error_of(spec)
    spec = suite()
    del spec["workloads"][0]["target"]
    assert "target" in error_of(spec)


def test_a_search_needs_the_tuning_block_and_a_bad_bound_names_the_entry() -> None:
    spec = suite()
    del spec["tuning"]
    assert "tuning" in error_of(spec)
    spec = suite()
    spec["optimizers"][7]["search"] = {"lr": {"log_uniform": [1e-4, 1e9]}}
    assert "search.lr" in error_of(spec)


def test_shrunk_caps_epochs_trials_and_studies() -> None:
    small = SuiteSpec.model_validate(shrunk(LECTURE_SUITE, epochs=2, trials=2, studies=2))
    assert all(w.epochs <= 2 for w in small.workloads if w.model.name != "point")  # type: ignore[attr-defined]
    landscape = next(w for w in small.workloads if w.model.name == "point")  # type: ignore[attr-defined]
    assert landscape.epochs == round(200 * 2 / 8)  # scaled like the sample workloads
    assert small.tuning.trials == 2 and small.studies == 2
    assert SuiteSpec.model_validate(LECTURE_SUITE).workloads[0].epochs == 8  # not mutated
