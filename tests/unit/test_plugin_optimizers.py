"""Optimizers of installed packages: found through the ``optbench.optimizers`` entry point
(a tiny package written to a temporary path, no pip), described from their signatures,
published by a worker, validated at submission like torch.optim's, trained (fused where a
probe shows they step per member); schedule-free's evaluations read its eval() weights."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from services import plugins
from services.api.app import create_app
from services.errors import InvalidSpec
from services.spec import LECTURE_SPEC, MODERN_SPEC, JobSpec, field_errors, modern_spec
from tests.support import local_client
from tests.unit.test_checkpoint_resume import (
    Checkpoints,
    assert_same,
    interrupted,
    uninterrupted,
    with_checkpoints,
)
from tests.unit.test_crash_resume import checkpointing  # noqa: F401  (a fixture)
from tests.unit.test_engine import LECTURE, job
from workers.catalog import CatalogPublisher
from workers.engine import Experiment, OptimizerConfig, optimizer_probe
from workers.engine import optimizer_classes as classes
from workers.sinks.memory import MemorySink

TINY = "tiny_opt:SignMomentum"

TINY_MODULE = '''
import torch


class SignMomentum(torch.optim.Optimizer):
    """Sign descent on a momentum buffer (a test package's optimizer)."""

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, rule="sign"):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad + group["weight_decay"] * p)
                p.add_(buf.sign(), alpha=-group["lr"])
'''


@pytest.fixture
def tiny_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution 'tiny-opt' with one entry point, importable from a temporary path."""
    (tmp_path / "tiny_opt").mkdir()
    (tmp_path / "tiny_opt" / "__init__.py").write_text(textwrap.dedent(TINY_MODULE))
    info = tmp_path / "tiny_opt-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-opt\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[optbench.optimizers]\nSignMomentum = tiny_opt:SignMomentum\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    classes.plugins.cache_clear()
    optimizer_probe.fusion_blocker.cache_clear()
    yield tmp_path
    classes.plugins.cache_clear()
    optimizer_probe.fusion_blocker.cache_clear()
    sys.modules.pop("tiny_opt", None)


def described(name: str) -> dict[str, Any]:
    return {**classes.plugins()[name].describe(), "workers": 1}


def test_the_entry_point_is_found_and_typed_from_its_signature(tiny_package: Path) -> None:
    found = classes.plugins()[TINY]
    assert (found.source, found.package, found.version) == ("tiny_opt", "tiny-opt", "0.1")
    assert found.refused is None and not found.modes
    params = found.describe()["parameters"]
    assert params["lr"] == {
        "type": "float",
        "default": 0.01,
        "bounds": {"gt": 0.0, "le": 1e6},
        "bounds_from": "name",
    }
    assert params["momentum"]["bounds"] == {"ge": 0.0, "lt": 1.0}
    assert params["weight_decay"]["bounds"] == {"ge": 0.0}
    assert params["rule"] == {"type": "str", "default": "sign", "bounds_from": "none"}
    assert classes.resolve(TINY).__name__ == "SignMomentum"


def _spec(*entries: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({**LECTURE_SPEC, "optimizers": list(entries)})


def test_plugin_entries_are_validated_like_torch_optim_entries(tiny_package: Path) -> None:
    available = {TINY: described(TINY)}
    spec = plugins.resolve_entries(_spec({"name": "TINY_OPT:signmomentum", "lr": 0.1}), available)
    (entry,) = spec.optimizers
    assert entry.name == TINY  # as published, whatever the case given
    assert entry.hyperparameters() == {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "rule": "sign",
    }
    # Bad bounds: the same messages torch.optim's entries get, under the same fields.
    with pytest.raises(InvalidSpec) as bad:
        plugins.resolve_entries(
            _spec({"name": TINY, "lr": -1, "momentum": 1.0}, {"name": "adam"}), available
        )
    fields = {error["field"]: error["message"] for error in bad.value.extra["errors"]}
    with pytest.raises(ValueError) as builtin:
        _spec({"name": "sgd", "lr": -1, "momentum": 1.0})
    expected = {e.field: e.message for e in field_errors(builtin.value.errors())}  # type: ignore[attr-defined]
    assert (
        fields
        == expected
        == {
            "optimizers[0].lr": "Input should be greater than 0",
            "optimizers[0].momentum": "Input should be less than 1",
        }
    )
    with pytest.raises(InvalidSpec, match=r"optimizers\[0\]: unknown key 'unknown'; allowed"):
        plugins.resolve_entries(_spec({"name": TINY, "unknown": 1}), available)


def test_a_job_naming_an_optimizer_no_live_worker_has_is_refused(tiny_package: Path) -> None:
    with pytest.raises(InvalidSpec) as missing:
        plugins.resolve_entries(_spec({"name": "pytorch_optimizer:Nope"}), {TINY: described(TINY)})
    assert str(missing.value) == (
        "optimizers[0].name: no live worker has the optimizer 'pytorch_optimizer:Nope'; "
        f"available: {TINY}"
    )
    with pytest.raises(InvalidSpec, match=r"available: none \(no live worker"):
        plugins.resolve_entries(_spec({"name": TINY}), {})


def test_second_derivative_optimizers_are_refused_with_the_reason() -> None:
    pytest.importorskip("pytorch_optimizer")
    for name in ("pytorch_optimizer:AdaHessian", "pytorch_optimizer:SophiaH"):
        assert "second derivatives" in (classes.plugins()[name].refused or "")
        with pytest.raises(InvalidSpec, match="cannot be trained: it needs second derivatives"):
            plugins.resolve_entries(_spec({"name": name}), {name: described(name)})
        with pytest.raises(ValueError, match="second derivatives"):
            classes.resolve(name)


def test_published_catalog_is_live_then_gone_and_the_api_uses_it(
    tiny_package: Path, embedded_home: Path
) -> None:
    publisher = CatalogPublisher(interval=3600, worker="host:1")
    assert publisher.publish() == len(classes.plugins())
    with local_client(create_app()) as client:
        catalog = client.get("/v1/catalog").json()
        (tiny,) = [o for o in catalog["plugin_optimizers"] if o["name"] == TINY]
        assert tiny["package"] == "tiny-opt" and tiny["workers"] == 1
        assert tiny["parameters"]["lr"]["exclusiveMinimum"] == 0.0
        assert tiny["bounds_from"] == {
            "lr": "name",
            "momentum": "name",
            "weight_decay": "name",
            "rule": "none",
        }
        body = {**LECTURE_SPEC, "optimizers": [{"name": TINY, "lr": 0.05}, {"name": "sgd"}]}
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        runs = client.get(f"/v1/jobs/{created.json()['id']}").json()["runs"]
        assert runs[0]["optimizer"] == TINY and runs[0]["label"] == TINY
        assert runs[0]["hyperparameters"]["momentum"] == 0.9  # the default, stored
        bad = client.post("/v1/jobs", json={**body, "optimizers": [{"name": TINY, "lr": 0}]})
        assert bad.status_code == 422
        assert bad.json()["errors"] == [
            {"field": "optimizers[0].lr", "message": "Input should be greater than 0"}
        ]
        publisher.stop()  # the worker withdraws: nobody has the plugin any more
        gone = client.post("/v1/jobs", json=body)
        assert gone.status_code == 422
        assert "no live worker has the optimizer 'tiny_opt:SignMomentum'" in gone.text


def _run(name: str, label: str | None = None, **hyperparameters: Any) -> OptimizerConfig:
    return OptimizerConfig(label or name, name, name, hyperparameters)


def test_the_plugin_trains_fused_as_it_trains_alone(tiny_package: Path) -> None:
    optimizers = [_run(TINY, "a", lr=0.01), _run(TINY, "b", lr=0.003), LECTURE[7]]
    config = dataclasses.replace(job(optimizers, epochs=2), dtype="float64", fuse="always")
    fused, alone = MemorySink(), MemorySink()
    Experiment(config).run_all(fused)
    Experiment(dataclasses.replace(config, fuse="never")).run_all(alone)
    assert all(result.fused for result in fused.results.values())
    for key in alone.steps:
        got = [step.loss for step in fused.steps[key]]
        want = [step.loss for step in alone.steps[key]]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert fused.steps[0][-1].loss < fused.steps[0][0].loss  # it trains


def _val_by_hand(experiment: Experiment, model_state: dict[str, torch.Tensor]) -> float:
    model = experiment.initial_model(0)
    model.load_state_dict(model_state)
    model.eval()
    with torch.no_grad():
        out = model(experiment.data.x_val)
        return float(torch.nn.functional.cross_entropy(out, experiment.data.y_val))


@pytest.mark.parametrize("fuse", ["always", "never"])
def test_schedule_free_validation_is_of_its_eval_weights(fuse: str) -> None:
    pytest.importorskip("schedulefree")
    sf = "schedulefree:AdamWScheduleFree"
    optimizers = [_run(sf, "sf", lr=0.01), _run(sf, "sf2", lr=0.003), LECTURE[7]]
    config = with_checkpoints(
        dataclasses.replace(job(optimizers, epochs=3, flush_every=100), dtype="float64", fuse=fuse),
        every=10_000,  # at epoch ends only
    )
    store, sink = Checkpoints(), MemorySink()
    experiment = Experiment(config)
    from workers.engine.hooks import CompositeHooks

    experiment.run_all(CompositeHooks(sink, store))
    assert all(r.fused == (fuse == "always") for r in sink.results.values())
    states = store.states()  # the checkpoints after epoch 2, taken in eval mode
    for key in (0, 1):
        state = states[key]
        assert state.epochs == 2
        recorded = sink.epochs[key][1].val_loss
        x = state.state["model"]
        assert recorded == pytest.approx(_val_by_hand(experiment, x), rel=1e-12)
        # Its training weights y = x + (1 - beta1)(z - x) give another loss: the test can fail.
        opt = state.state["optimizer"]
        z = [opt["state"][i]["z"] for i in sorted(opt["state"])]
        flat_z = torch.cat([t.reshape(-1) for t in z])
        flat_x = torch.cat([t.reshape(-1) for t in x.values()])
        y = flat_x + 0.1 * (flat_z - flat_x)
        shaped, offset = {}, 0
        for name, tensor in x.items():
            shaped[name] = y[offset : offset + tensor.numel()].view(tensor.shape)
            offset += tensor.numel()
        assert abs(_val_by_hand(experiment, shaped) - recorded) > 1e-6


@pytest.mark.parametrize("crash_after", [20, 40], ids=["mid-epoch", "after-an-epoch-end"])
def test_schedule_free_lion_and_prodigy_resume_to_the_same_series(crash_after: int) -> None:
    pytest.importorskip("schedulefree")
    pytest.importorskip("pytorch_optimizer")
    optimizers = [
        _run("schedulefree:AdamWScheduleFree", lr=0.01),
        _run("pytorch_optimizer:Lion", lr=3e-4),
        _run(
            "prodigyopt:Prodigy"
            if classes.plugins().get("prodigyopt:Prodigy")
            else "pytorch_optimizer:Prodigy"
        ),
        _run("pytorch_optimizer:ScheduleFreeAdamW", lr=0.01),
    ]
    base = dataclasses.replace(job(optimizers, epochs=3, flush_every=5), fuse="always")
    config = with_checkpoints(base, every=10)
    expected = uninterrupted(config)
    first, second, store = interrupted(config, crash_after)
    assert all(result.fused for result in second.results.values())
    assert_same(expected, first, second, store)


def test_the_modern_preset_resolves_against_the_installed_packages() -> None:
    pytest.importorskip("pytorch_optimizer")
    available = {name: described(name) for name in classes.plugins()}
    spec = modern_spec(list(available))
    assert [entry["label"] for entry in spec["optimizers"]] == [
        entry["label"] for entry in MODERN_SPEC["optimizers"]
    ]
    resolved = plugins.resolve_entries(JobSpec.model_validate(spec), available)
    # The plugin entries (between the built-in AdamW and Muon+AdamW): typed, searches kept.
    for entry in resolved.optimizers[1:-1]:
        assert entry.name in available and entry.search
    # A search space outside a plugin's bounds: the message a torch.optim entry gets.
    bad = {
        **spec,
        "optimizers": [{**spec["optimizers"][2], "search": {"lr": {"uniform": [-1, 1]}}}],
    }
    with pytest.raises(InvalidSpec) as plugin_error:
        plugins.resolve_entries(JobSpec.model_validate(bad), available)
    builtin = {**bad, "optimizers": [{**bad["optimizers"][0], "name": "adamw"}]}
    with pytest.raises(ValueError) as builtin_error:
        JobSpec.model_validate(builtin)
    (expected,) = field_errors(builtin_error.value.errors())  # type: ignore[attr-defined]
    assert (
        str(plugin_error.value)
        == str(expected)
        == ("optimizers[0].search.lr: -1.0 is outside what lr accepts (allowed: 0 < lr <= 1e+06)")
    )
    # Without plugins the preset keeps the built-in entries alone: AdamW and Muon+AdamW.
    assert [entry["label"] for entry in modern_spec([])["optimizers"]] == ["adamw", "muon+adamw"]


STORED_SPEC = {
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "optimizers": [
        {"name": "schedulefree:AdamWScheduleFree", "lr": 0.01},
        {"name": "lion_pytorch:Lion", "lr": 3e-4},
        {"name": "adam"},
    ],
    "epochs": 2,
    "batch_size": 64,  # 17 steps per epoch
    "eval_every_steps": 6,  # mid-epoch evaluations too, each in eval mode
}
_STEP_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "grad_norm", "val_loss", "val_accuracy")
_EPOCH_FIELDS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _stored(job_id: str) -> dict[str, Any]:
    """Every stored number of the job's runs that does not measure time."""
    from sqlalchemy import select

    from services.db import store
    from services.db.models import EpochMetric, StepMetric
    from services.db.session import unit_of_work

    with unit_of_work() as session:
        result: dict[str, Any] = {}
        for run in store.get_job(session, job_id).runs:
            steps = session.scalars(
                select(StepMetric).where(StepMetric.run_id == run.id).order_by(StepMetric.step)
            )
            epochs = session.scalars(
                select(EpochMetric).where(EpochMetric.run_id == run.id).order_by(EpochMetric.epoch)
            )
            result[run.label] = {
                "steps": [tuple(getattr(row, f) for f in _STEP_FIELDS) for row in steps],
                "epochs": [tuple(getattr(row, f) for f in _EPOCH_FIELDS) for row in epochs],
                "run": (run.status, run.steps_done, run.test_loss, run.test_accuracy, run.fused),
            }
        return result


@pytest.mark.usefixtures("checkpointing")  # SQLite and PostgreSQL, checkpoints every 8 steps
def test_a_stored_plugin_job_whose_worker_died_resumes_to_the_uninterrupted_one() -> None:
    """The crash path of tests/unit/test_crash_resume.py with schedule-free and Lion in a
    fused group: every stored field (steps, mid-epoch and epoch evaluations, test scores)
    equals the uninterrupted job's."""
    pytest.importorskip("schedulefree")
    pytest.importorskip("lion_pytorch")
    from services.db import store
    from services.db.session import unit_of_work
    from tests.unit.test_crash_resume import DieAfterCheckpoint, WorkerDied, age_heartbeats
    from tests.unit.test_crash_resume import run_ids as ids
    from workers.execution import execute_job, execute_part

    here = {name: described(name) for name in classes.plugins()}
    spec = plugins.resolve_entries(JobSpec.model_validate(STORED_SPEC), here)

    def stored_job() -> str:
        with unit_of_work() as session:
            return str(store.create_job(session, spec).id)

    reference = stored_job()
    assert execute_job(reference) == "succeeded"
    job_id = stored_job()
    with pytest.raises(WorkerDied):
        execute_job(job_id, extra_hooks=(DieAfterCheckpoint(after_step=20),))
    age_heartbeats(job_id)
    assert execute_part(job_id, ids(job_id), threads=1) == "succeeded"
    expected, got = _stored(reference), _stored(job_id)
    assert got == expected
    assert all(run["run"][-1] for run in got.values())  # fused
    assert len(got["schedulefree:AdamWScheduleFree"]["steps"]) == 34


def test_the_modern_demo_takes_epochs_and_trials() -> None:
    from services.demo import modern_demo_spec

    spec = modern_demo_spec(["pytorch_optimizer:Lion", "pytorch_optimizer:SOAP"], 2, 3)
    assert [(e["label"], e["name"]) for e in spec["optimizers"]] == [
        ("adamw", "adamw"),
        ("lion", "pytorch_optimizer:Lion"),
        ("soap", "pytorch_optimizer:SOAP"),
        ("muon+adamw", "adamw"),
    ]
    assert spec["epochs"] == 2 and spec["tuning"]["trials"] == 3
    assert spec["tuning"]["rerun_seeds"] == MODERN_SPEC["tuning"]["rerun_seeds"]
    JobSpec.model_validate(spec)


def test_every_installed_plugin_builds_from_its_catalog_defaults() -> None:
    """As tests/unit/test_catalog_agreement.py does for torch.optim: each trainable plugin's
    entry, all defaults, validates and constructs its class with those values, so what the
    catalog says a job may give is what the class takes."""
    from workers.engine import optimizers
    from workers.engine.config import OptimizerConfig as Config

    trainable = [p for p in classes.plugins().values() if not p.refused]
    if not trainable:
        pytest.skip("no optimizer package installed")
    for plugin in trainable:
        model = plugins.entry_model(plugin.describe())
        entry = model.model_validate({"name": plugin.name})
        values = entry.hyperparameters()
        assert set(values) == set(plugin.parameters), plugin.name
        weight = torch.nn.Parameter(torch.zeros(3, 2))
        built = optimizers.build(Config(plugin.name, plugin.name, plugin.name, values), [weight])
        assert type(built) is plugin.cls, plugin.name
