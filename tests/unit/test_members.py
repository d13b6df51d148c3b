"""Members leave a running group at any step and the others go on unchanged; a sweep of 256
members trains as one group; the engine's modules import no circle and stay small."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from tests.invariants import assert_records_valid
from tests.unit.test_engine import LECTURE, job
from workers.engine import Experiment, Hooks, ModelConfig, OptimizerConfig
from workers.engine.members import FusedMembers
from workers.engine.plan import CPU_FUSED_ACTIVATION_BYTES, MIN_CUT_GROUP
from workers.engine.trainer import Event, Trainer
from workers.sinks.memory import MemorySink

ENGINE = Path(__file__).resolve().parents[2] / "workers" / "engine"


def train_group(config, sink: Hooks, on_step=None) -> Trainer:  # type: ignore[no-untyped-def]
    """Train the job's one fused group; ``on_step(trainer)`` runs after every step."""
    experiment = Experiment(config)
    (group,) = [group for group in experiment.groups() if group.fused]
    initial = {seed: experiment.initial_model(seed) for seed in {r.seed for r in group.runs}}
    trainer = experiment.trainer(group, sink, initial, {})
    if on_step is not None:
        trainer.on(Event.STEP, on_step)
    trainer.run()
    return trainer


def untimed(records: list) -> list:  # type: ignore[type-arg]
    """The records without their clock readings (which differ between two trainings)."""
    return [dataclasses.replace(record, train_seconds=0.0) for record in records]


def test_a_member_leaves_at_any_step_and_the_others_go_on_unchanged() -> None:
    config = dataclasses.replace(job(LECTURE[1:], epochs=2, flush_every=5), dtype="float64")
    whole, pruned = MemorySink(), MemorySink()
    train_group(config, whole)
    bank: list[int] = []

    def prune(trainer: Trainer) -> None:
        assert isinstance(trainer.members, FusedMembers)
        bank.append(trainer.members.bank.values.data_ptr())
        if trainer.step == 7:  # mid-flush (every 5 steps), mid-epoch
            trainer.end(2)

    trainer = train_group(config, pruned, prune)
    assert len(set(bank)) == 1  # the bank was never copied or rebuilt
    left = trainer.runs[2].key
    assert [s.step for s in pruned.steps[left]] == list(range(1, 8))
    assert untimed(pruned.steps[left]) == untimed(whole.steps[left][:7])
    assert pruned.results[left].steps == 7 and not pruned.results[left].diverged
    assert pruned.epochs[left] == []  # it left before its first epoch ended
    for run in trainer.runs:
        if run.key != left:
            assert untimed(pruned.steps[run.key]) == untimed(whole.steps[run.key])  # bit for bit
            assert untimed(pruned.epochs[run.key]) == untimed(whole.epochs[run.key])
            assert pruned.results[run.key].test_loss == whole.results[run.key].test_loss


def test_a_member_that_diverges_ends_and_its_group_goes_on() -> None:
    runaway = OptimizerConfig("runaway", "sgd", "SGD", {"lr": 1e6})
    config = job([*LECTURE[1:3], runaway], epochs=2, flush_every=5)
    sink = MemorySink()
    trainer = train_group(config, sink)
    result = sink.results[trainer.runs[2].key]
    assert result.diverged and result.diverged_at_step is not None
    assert [s.step for s in sink.steps[trainer.runs[2].key]] == list(
        range(1, result.diverged_at_step)
    )
    for run in trainer.runs[:2]:
        assert not sink.results[run.key].diverged
        assert sink.results[run.key].steps == len(sink.steps[run.key]) > result.steps


def test_a_sweep_of_256_members_trains_as_one_group() -> None:
    rates = [0.001 * 1.03**index for index in range(256)]
    sweep = [OptimizerConfig(f"sgd-{i}", "sgd", "SGD", {"lr": lr}) for i, lr in enumerate(rates)]
    config = dataclasses.replace(job(sweep, epochs=1, flush_every=20), fuse="auto")
    experiment = Experiment(config)
    assert [len(group.runs) for group in experiment.groups()] == [256]
    sink = MemorySink()
    experiment.run_all(sink)
    assert len(sink.results) == 256
    assert all(result.fusion == "fused with 255 other runs" for result in sink.results.values())
    for key, steps in sink.steps.items():
        assert_records_valid(steps)
        assert steps[-1].lr == pytest.approx(rates[key])
    losses = [sink.epochs[key][-1].train_loss for key in range(256)]
    assert losses[200] < losses[0]  # the rates differ, and so do the runs


def test_on_a_cpu_a_sweep_too_big_for_the_caches_is_cut_into_groups_that_fit() -> None:
    sweep = [OptimizerConfig(f"sgd-{i}", "sgd", "SGD", {"lr": 0.01}) for i in range(256)]
    wide = ModelConfig("mlp", {"hidden": [512]})
    experiment = Experiment(dataclasses.replace(job(sweep, epochs=1, model=wide), fuse="auto"))
    member = experiment._member_bytes(False)
    assert member is not None
    capacity = CPU_FUSED_ACTIVATION_BYTES // member
    sizes = [len(group.runs) for group in experiment.groups()]
    assert all(group.fused for group in experiment.groups())
    assert sum(sizes) == 256 and len(sizes) > 1
    assert all(MIN_CUT_GROUP <= size <= capacity for size in sizes)
    assert max(sizes) - min(sizes) <= 1


def test_a_study_cut_on_a_cpu_keeps_each_entrys_trials_in_one_group() -> None:
    # Three entries' sweeps of 40 trials each, where a group holds fewer than 80: the cut
    # keeps every entry's trials together, since its pruning rule ranks the trials that
    # train together (a plain sweep is cut into near-equal groups instead, above).
    sweep = [
        OptimizerConfig(name, name, torch_class, {"lr": 0.01})
        for name, torch_class in (("sgd", "SGD"), ("adam", "Adam"), ("rmsprop", "RMSprop"))
    ]
    wide = ModelConfig("mlp", {"hidden": [512]})
    config = dataclasses.replace(job(sweep, epochs=1, model=wide), fuse="auto")
    trials = tuple(
        dataclasses.replace(run, key=run.key * 100 + i, trial=True)
        for run in config.runs
        for i in range(40)
    )
    experiment = Experiment(dataclasses.replace(config, runs=trials))
    member = experiment._member_bytes(False)
    assert member is not None and 40 <= CPU_FUSED_ACTIVATION_BYTES // member < 80
    groups = experiment.groups()
    labels = [{run.optimizer.label for run in group.runs} for group in groups]
    assert len(groups) == 3 and all(len(found) == 1 for found in labels)
    assert sorted(len(group.runs) for group in groups) == [40, 40, 40]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "workers.engine":
                found |= {f"workers.engine.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("workers.engine.")}


def test_the_engine_modules_import_no_circle_and_stay_small() -> None:
    modules = {f"workers.engine.{p.stem}": p for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import circle: " + " -> ".join([*visiting, name])
        visiting.append(name)
        for imported in graph[name]:
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    assert {name: size for name, size in sizes.items() if size > 400} == {}
