"""The job spec: what it accepts, and how it explains what it refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from services.spec import LECTURE_SPEC, JobSpec, field_errors


def errors_of(mutate: Any) -> list[str]:
    spec = copy.deepcopy(LECTURE_SPEC)
    mutate(spec)
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    return [str(error) for error in field_errors(caught.value.errors())]


def test_lecture_spec_expands_into_one_run_per_optimizer_and_seed() -> None:
    spec = JobSpec.model_validate({**LECTURE_SPEC, "seeds": [0, 1]})
    assert len(spec.runs()) == 16
    assert spec.runs()[:2] == [("gd", 0), ("sgd", 0)]
    assert spec.optimizers[0].info.full_batch


def test_aliases_map_to_their_torch_optimizer_with_fixed_arguments() -> None:
    spec = JobSpec.model_validate(LECTURE_SPEC)
    nag = spec.optimizers[3]
    assert nag.info.torch_class == "SGD"
    assert nag.hyperparameters() == {
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "nesterov": True,
    }


def test_names_are_case_insensitive_and_defaults_are_torchs() -> None:
    spec = JobSpec.model_validate({**LECTURE_SPEC, "optimizers": [{"name": "AdamW"}]})
    entry = spec.optimizers[0]
    assert entry.name == "adamw"  # type: ignore[attr-defined]
    assert entry.hyperparameters()["weight_decay"] == 0.01
    assert entry.display_label == "adamw"


def test_unknown_optimizer_names_the_field_and_lists_allowed_names() -> None:
    [message] = errors_of(lambda s: s["optimizers"].append({"name": "adamm"}))
    assert message.startswith("optimizers[8].name: 'adamm'")
    assert "gd, sgd, momentum, nag" in message and "adamw" in message


def test_unknown_key_lists_the_allowed_keys() -> None:
    [message] = errors_of(lambda s: s["optimizers"][2].update(mom=0.9))
    assert message.startswith("optimizers[2]: unknown key 'mom'")
    assert "lr, momentum, dampening, weight_decay" in message


def test_out_of_range_value_names_the_field_and_the_bound() -> None:
    [message] = errors_of(lambda s: s["optimizers"][2].update(momentum=1.5))
    assert message == "optimizers[2].momentum: Input should be less than 1"
    [betas] = errors_of(lambda s: s["optimizers"][7].update(betas=[0.9, 1.2]))
    assert betas.startswith("optimizers[7].betas[1]:")


def test_duplicate_labels_are_rejected_with_both_positions() -> None:
    [message] = errors_of(lambda s: s["optimizers"].append({"name": "adam", "lr": 0.01}))
    assert "duplicate label 'adam'" in message and "optimizers[7]" in message


def test_labels_make_duplicates_legal() -> None:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["optimizers"].append({"name": "adam", "lr": 0.01, "label": "adam-fast"})
    assert JobSpec.model_validate(spec).runs()[-1] == ("adam-fast", 0)


def test_refused_optimizers_say_why_and_what_to_use() -> None:
    [message] = errors_of(lambda s: s["optimizers"].append({"name": "SparseAdam"}))
    assert message.startswith("optimizers[8].name: SparseAdam needs sparse gradients")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["dataset"].update(name="cifar"), "dataset.name: Input tag 'cifar'"),
        (
            lambda s: s["model"].update(activation="swish"),
            "model.activation: Input should be 'relu'",
        ),
        (lambda s: s.update(epochs=0), "epochs: Input should be greater than or equal to 1"),
        (lambda s: s.update(seeds=[1, 1]), "seeds: seeds must be distinct"),
        (lambda s: s["target"].update(value=95), "target: an accuracy target is a fraction"),
        (lambda s: s["optimizers"][1].update(nesterov=True), "optimizers[1]: nesterov=true needs"),
    ],
)
def test_other_refusals_name_their_field(mutate: Any, expected: str) -> None:
    [message] = errors_of(mutate)
    assert message.startswith(expected)


def test_target_direction_depends_on_the_metric() -> None:
    spec = JobSpec.model_validate({**LECTURE_SPEC, "target": {"metric": "val_loss", "value": 0.2}})
    assert spec.target.reached(0.1) and not spec.target.reached(0.3)
    assert JobSpec.model_validate(LECTURE_SPEC).target.reached(0.96)


def test_schedules_are_validated_per_entry() -> None:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["optimizers"][7]["schedule"] = {"name": "cosine"}
    entry = JobSpec.model_validate(spec).optimizers[7]
    assert entry.schedule is not None and entry.schedule.name == "cosine"
    assert "schedule" not in entry.hyperparameters()  # not a torch.optim argument
    [message] = errors_of(
        lambda s: s["optimizers"][1].update(schedule={"name": "multistep", "milestones": [5, 3]})
    )
    assert message.startswith("optimizers[1].schedule.milestones: milestones must be strictly")
    [unknown] = errors_of(lambda s: s["optimizers"][1].update(schedule={"name": "linear"}))
    assert unknown.startswith("optimizers[1].schedule") and "'cosine'" in unknown


def test_landscapes_pair_with_the_point_model_and_default_to_a_distance_target() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "rosenbrock"},
            "model": {"name": "point"},
            "optimizers": [{"name": "adam"}],
            "epochs": 100,
        }
    )
    assert spec.task == "landscape"
    assert spec.effective_target.metric == "distance" and spec.effective_target.column == "distance"
    [mlp] = errors_of(lambda s: s.update(dataset={"name": "rosenbrock"}))
    assert "'point' model" in mlp
    [point] = errors_of(lambda s: s.update(model={"name": "point"}))
    assert "'point' needs a landscape" in point


def test_targets_must_fit_the_task() -> None:
    [message] = errors_of(lambda s: s.update(target={"metric": "distance", "value": 0.1}))
    assert "does not fit a classification data set" in message
    regression = {
        "dataset": {"name": "regression"},
        "model": {"name": "linear"},
        "optimizers": [{"name": "sgd"}],
    }
    target = JobSpec.model_validate(regression).effective_target
    assert (target.metric, target.column, target.value) == ("val_r2", "val_accuracy", 0.9)


def test_convolutional_models_need_image_data() -> None:
    [message] = errors_of(lambda s: s.update(model={"name": "cnn"}))
    assert message.startswith("model: 'cnn' needs an image data set")
