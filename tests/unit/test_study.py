"""Tuning studies (issue 14, point 9): what a bad search space answers, what the samplers
draw, which trials pruning stops, a worker's death mid-study, the rerun seeds and the test
split. The studies here are small (two optimizers, six trials of four epochs on digits,
a hidden layer of 16) and train in this process, through the same functions the Celery
tasks call (workers/execution.py): ``send_part`` collects the parts a worker would send, so
the search and the reruns can be trained (and interrupted) one phase at a time."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from services.api.app import create_app
from services.db import store
from services.db.models import BASELINE, RERUN, TRIAL, EpochMetric, Run, StepMetric
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, LECTURE_TUNED_SPEC, JobSpec
from services.spec.tuning import Distribution, TuningSpec
from services.study import phases, sampling
from services.study.pruning import to_prune
from tests.conftest import reset_process_state
from tests.support import local_client
from workers.engine import Hooks, RunConfig, StepColumns
from workers.engine.checkpoint import RunState
from workers.engine.problem import Problem
from workers.execution import execute_job, execute_part

STEPS_PER_EPOCH = 17  # digits: 1,797 samples, 60 % for training = 1,078, batches of 64
EPOCHS = 4
STUDY: dict[str, Any] = {
    "name": "small study",
    "dataset": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [16]},
    "optimizers": [
        {"name": "sgd", "lr": 0.05, "search": {"lr": {"log_uniform": [0.003, 1.0]}}},
        {"name": "adam", "lr": 0.001, "search": {"lr": {"log_uniform": [1e-4, 0.03]}}},
    ],
    "epochs": EPOCHS,
    "batch_size": 64,
    "seeds": [3],
    "tuning": {
        "trials": 6,
        "sampler": "quasirandom",
        # rungs at epochs 1 and 2 (of 4): 6 trials -> 3 -> 2 per optimizer
        "pruning": {"rule": "successive_halving", "min_epochs": 1, "reduction_factor": 2},
        "rerun_seeds": 2,
    },
}
LABELS = ("sgd", "adam")


def study(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(STUDY)
    for key, value in changes.items():
        if key in ("trials", "sampler", "pruning", "rerun_seeds", "metric", "baseline"):
            spec["tuning"][key] = value
        else:
            spec[key] = value
    return spec


# --- a bad search space is a 422 naming the field and the allowed range ------------------


def _search(index: int, key: str, distribution: dict[str, Any]) -> Callable[[dict], None]:
    return lambda spec: spec["optimizers"][index]["search"].update({key: distribution})


def _drop_searches(spec: dict[str, Any]) -> None:
    for entry in spec["optimizers"]:
        entry.pop("search")


LANDSCAPE = {
    "dataset": {"name": "rosenbrock"},
    "model": {"name": "point"},
    "optimizers": [{"name": "sgd", "lr": 1e-3, "search": {"lr": {"log_uniform": [1e-4, 1e-2]}}}],
    "tuning": {"trials": 3},
}


def _landscape_selected_on_val_loss(spec: dict[str, Any]) -> None:
    """A landscape has no validation split (no data set to split)."""
    spec.clear()
    spec.update(copy.deepcopy(LANDSCAPE), epochs=2)
    spec["tuning"]["metric"] = "val_loss"


# (what is wrong, how the spec is changed, what the problem's detail must say: the field, then
# what is allowed)
BAD_SPACES: list[tuple[str, Callable[[dict[str, Any]], None], Sequence[str]]] = [
    (
        "unknown key",
        _search(0, "lrr", {"uniform": [0.1, 0.2]}),
        ["optimizers[0].search.lrr:", "searchable: lr, momentum, dampening"],
    ),
    (
        "another optimizer's hyperparameter",
        _search(1, "momentum", {"uniform": [0.1, 0.9]}),
        ["optimizers[1].search.momentum:", "searchable: lr, betas, eps"],
    ),
    (
        "lo >= hi",
        _search(0, "lr", {"uniform": [0.5, 0.1]}),
        ["optimizers[0].search.lr:", "needs lo < hi, got [0.5, 0.1]"],
    ),
    (
        "lo == hi",
        _search(0, "lr", {"log_uniform": [0.1, 0.1]}),
        ["optimizers[0].search.lr:", "needs lo < hi"],
    ),
    (
        "log_uniform lo <= 0",
        _search(0, "lr", {"log_uniform": [0.0, 0.1]}),
        ["optimizers[0].search.lr:", "log_uniform: lo must be > 0"],
    ),
    (
        "learning rate past its bound",
        _search(1, "lr", {"uniform": [0.5, 2e6]}),
        ["optimizers[1].search.lr: 2000000.0 is outside", "allowed: 0 < lr <= 1e+06"],
    ),
    (
        "a beta outside [0, 1)",
        _search(1, "betas.0", {"uniform": [0.5, 1.5]}),
        ["optimizers[1].search.betas.0: 1.5 is outside", "allowed: 0 <= betas.0 < 1"],
    ),
    (
        "an element a pair lacks",
        _search(1, "betas.2", {"uniform": [0.5, 0.9]}),
        ["optimizers[1].search.betas.2:", "has no element 2"],
    ),
    (
        "a float distribution on a bool",
        _search(1, "amsgrad", {"uniform": [0, 1]}),
        ["optimizers[1].search.amsgrad:", 'use {"int": [lo, hi]} or {"choice": [...]}'],
    ),
    (
        "a schedule key without a schedule",
        _search(0, "schedule.warmup_steps", {"int": [0, 10]}),
        ["optimizers[0].search.schedule.warmup_steps:", "the entry has no schedule"],
    ),
    (
        "two kinds in one distribution",
        _search(0, "lr", {"uniform": [0.1, 0.2], "log_uniform": [0.1, 0.2]}),
        ["optimizers[0].search.lr:", '{"log_uniform": ...}, {"uniform": ...}, {"int": ...}'],
    ),
    (
        "grid sampler with a log_uniform",
        lambda spec: spec["tuning"].update(sampler="grid"),
        ["tuning.sampler: 'grid' takes grid or choice", "sgd.search.lr is log_uniform"],
    ),
    (
        "search without tuning",
        lambda spec: spec.pop("tuning"),
        ["optimizers: 'sgd' has a 'search' but the job has no 'tuning'", '"tuning": {"trials"'],
    ),
    (
        "tuning without search",
        _drop_searches,
        ["tuning: no optimizer entry has a 'search'", '"search": {"lr": {"log_uniform"'],
    ),
    (
        "two seeds",
        lambda spec: spec.update(seeds=[0, 1]),
        ["seeds: a study searches on one seed", "give one seed, got [0, 1]"],
    ),
    (
        "per-label trials with a wrong label",
        lambda spec: spec["tuning"].update(trials={"sgd": 4, "adm": 4}),
        ["tuning.trials:", "(sgd, adam); unknown ['adm'], missing ['adam']"],
    ),
    (
        "trials past the budget",
        lambda spec: spec["tuning"].update(trials=600),
        ["tuning:", "between 1 and 512, got 600"],
    ),
    (
        "val_* selection without a validation split",
        _landscape_selected_on_val_loss,
        ["tuning.metric: selecting on 'val_loss' needs a validation split", "val_fraction"],
    ),
]


@pytest.fixture
def api(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def test_the_small_study_and_the_landscape_one_are_accepted(api: TestClient) -> None:
    """The specs BAD_SPACES breaks are good as they stand: each 422 below is its change's."""
    for spec in (STUDY, {**LANDSCAPE, "epochs": 2}):
        response = api.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
    runs = api.get(f"/v1/jobs/{response.json()['id']}").json()["runs"]
    assert len(runs) == 3  # the landscape's three trials


@pytest.mark.parametrize(("wrong", "change", "said"), BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_a_bad_space_is_a_422_naming_the_field_and_what_is_allowed(
    api: TestClient, wrong: str, change: Callable[[dict[str, Any]], None], said: Sequence[str]
) -> None:
    spec = copy.deepcopy(STUDY)
    change(spec)
    response = api.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    for words in said:
        assert words in detail, (wrong, detail)
    assert api.get("/v1/jobs").json()["total"] == 0  # nothing stored


def test_the_tuned_preset_searches_each_lecture_rate_around_its_own_value() -> None:
    spec = JobSpec.model_validate(LECTURE_TUNED_SPEC)
    plain = JobSpec.model_validate(LECTURE_SPEC).optimizers
    assert [e.name for e in spec.optimizers] == [e.name for e in plain]
    for entry, lecture in zip(spec.optimizers, plain, strict=True):
        assert entry.search is not None and set(entry.search) == {"lr"}
        distribution = entry.search["lr"]
        low, high = distribution.values
        assert distribution.kind == "log_uniform" and high / low == pytest.approx(100)
        assert low < lecture.lr < high, entry.name
        # the one-shot baseline (and the point searched around) is the lecture's setting
        assert entry.hyperparameters() == lecture.hyperparameters()
    assert spec.tuning is not None and spec.tuning.pruning is not None
    assert (spec.tuning.sampler, spec.tuning.budget("gd"), spec.rerun_seeds) == (
        "quasirandom", 16, [1, 2, 3, 4, 5]
    )  # fmt: skip
    assert spec.tuning.baseline and spec.tuning.pruning.rungs(spec.epochs) == [2, 6]
    trials = phases.first_runs(spec)
    assert len(trials) == 8 * 16
    for run in trials:
        entry = next(o for o in LECTURE_TUNED_SPEC["optimizers"] if o["name"] == run.label)
        low, high = entry["search"]["lr"]["log_uniform"]
        assert low <= run.hyperparameters["lr"] <= high


def test_the_demo_submits_the_tuned_preset_or_a_smaller_one_when_told() -> None:
    from services.demo import demo_spec

    assert demo_spec(tuned=True) == LECTURE_TUNED_SPEC
    assert demo_spec() == {**LECTURE_SPEC, "epochs": 10}
    smaller = demo_spec(tuned=True, epochs=3, trials=4)
    assert smaller["epochs"] == 3 and smaller["tuning"]["trials"] == 4
    assert {**smaller, "epochs": 10, "tuning": LECTURE_TUNED_SPEC["tuning"]} == LECTURE_TUNED_SPEC
    assert LECTURE_TUNED_SPEC["tuning"]["trials"] == 16  # the preset itself is left alone
    spec = JobSpec.model_validate(smaller)
    assert spec.tuning is not None and spec.tuning.budget("adam") == 4
    with pytest.raises(ValueError, match="--trials needs --tuned"):
        demo_spec(trials=4)


# --- the samplers ------------------------------------------------------------------------

SPACE = {
    "lr": Distribution.model_validate({"log_uniform": [1e-4, 1e-1]}),
    "momentum": Distribution.model_validate({"uniform": [0.5, 0.99]}),
    "warmup_steps": Distribution.model_validate({"int": [0, 20]}),
    "nesterov": Distribution.model_validate({"choice": [True, False]}),
    "width": Distribution.model_validate({"grid": [16, 32, 64]}),
}


def inside(point: dict[str, Any]) -> bool:
    lr, momentum, warmup = point["lr"], point["momentum"], point["warmup_steps"]
    return (
        set(point) == set(SPACE)
        and 1e-4 <= lr <= 1e-1
        and 0.5 <= momentum <= 0.99
        and isinstance(warmup, int)
        and 0 <= warmup <= 20
        and point["nesterov"] in (True, False)
        and point["width"] in (16, 32, 64)
    )


def draw(sampler: str, seed: int, count: int = 16, history: Any = ()) -> list[dict[str, Any]]:
    return sampling.draw(
        SPACE, TuningSpec(sampler=sampler), seed=seed, count=count, history=list(history)
    )


@pytest.mark.parametrize("sampler", ["random", "quasirandom", "tpe"])
def test_a_sampler_s_points_lie_inside_their_bounds_and_repeat_from_the_seed(
    sampler: str,
) -> None:
    points = draw(sampler, seed=11)
    assert len(points) == 16 and all(inside(p) for p in points), points
    assert draw(sampler, seed=11) == points  # the same spec, the same points
    other = draw(sampler, seed=12)
    assert all(inside(p) for p in other)
    assert [p["lr"] for p in other] != [p["lr"] for p in points]
    assert len({p["lr"] for p in points}) == 16  # sampled, not one value repeated
    # Log-uniform: the rates cover the decades, not only the top one (a uniform draw over
    # [1e-4, 1e-1] would put 15 of 16 above 1e-2 on average).
    assert sum(p["lr"] < 1e-2 for p in points) >= 6


def test_tpe_rounds_learn_from_the_scored_trials_and_repeat_too() -> None:
    """The adaptive sampler's next round is rebuilt from the stored (setting, score) pairs:
    the same history gives the same round, a different one another, diverged trials (None)
    included, and every point stays inside its bounds."""
    first = draw("tpe", seed=5, count=8)
    history = [(p, -abs(math.log10(p["lr"]) + 2)) for p in first]  # best near lr = 1e-2
    history[0] = (history[0][0], None)  # a diverged trial
    second = draw("tpe", seed=5, count=8, history=history)
    assert all(inside(p) for p in second)
    assert draw("tpe", seed=5, count=8, history=history) == second
    flipped = [(p, None if s is None else -s) for p, s in history]
    assert draw("tpe", seed=5, count=8, history=flipped) != second


def test_the_grid_sampler_takes_every_combination_in_order_whatever_the_seed() -> None:
    space = {
        "lr": Distribution.model_validate({"grid": [0.1, 0.01]}),
        "nesterov": Distribution.model_validate({"choice": [False, True]}),
    }
    tuning = TuningSpec(sampler="grid", trials=4)
    every = [
        {"lr": 0.1, "nesterov": False},
        {"lr": 0.1, "nesterov": True},
        {"lr": 0.01, "nesterov": False},
        {"lr": 0.01, "nesterov": True},
    ]
    assert sampling.draw(space, tuning, seed=0, count=4) == every
    assert sampling.draw(space, tuning, seed=99, count=4) == every  # nothing is sampled
    # a later round goes on where the stored trials end
    assert sampling.draw(space, tuning, seed=0, count=9, history=[({}, 0.5)] * 3) == every[3:]


def trial_settings(spec: dict[str, Any]) -> list[tuple[str, int | None, float]]:
    runs = phases.first_runs(JobSpec.model_validate(spec))
    return [(run.label, run.trial, run.hyperparameters["lr"]) for run in runs]


@pytest.mark.parametrize("sampler", ["random", "quasirandom", "tpe"])
def test_a_study_s_trials_repeat_from_the_job_s_seed_and_differ_for_another(
    sampler: str,
) -> None:
    spec = study(sampler=sampler)
    settings = trial_settings(spec)
    count = 6 if sampler != "tpe" else 2  # tpe: its first round, a quarter of the budget
    assert [(label, trial) for label, trial, _ in settings] == [
        (label, number) for label in LABELS for number in range(count)
    ]
    bounds = {"sgd": (0.003, 1.0), "adam": (1e-4, 0.03)}
    assert all(bounds[label][0] <= lr <= bounds[label][1] for label, _, lr in settings)
    assert trial_settings(spec) == settings
    assert trial_settings(study(sampler=sampler, seeds=[4])) != settings
    # each entry its own sampler seed: the same space on two labels draws other points
    same_space = study(sampler=sampler)
    same_space["optimizers"][1]["search"] = copy.deepcopy(STUDY["optimizers"][0]["search"])
    drawn = trial_settings(same_space)
    assert [lr for label, _, lr in drawn if label == "sgd"] != [
        lr for label, _, lr in drawn if label == "adam"
    ]


# --- the studies, trained here -----------------------------------------------------------


@pytest.fixture
def one_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every phase of a study one part (no second worker process here)."""
    monkeypatch.setenv("OPTBENCH_JOB_PARTS", "1")
    reset_process_state()


@pytest.fixture
def checkpointing(one_part: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints often, for the crash test to resume from (flushes of 4 steps: a death
    lands between two of them)."""
    monkeypatch.setenv("OPTBENCH_FLUSH_EVERY_STEPS", "4")
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_EVERY_STEPS", "8")
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_MIN_SECONDS", "0")
    reset_process_state()


Part = tuple[str, list[int], int, int, int]


def stored_study(spec: dict[str, Any]) -> str:
    with unit_of_work() as session:
        return str(store.create_job(session, JobSpec.model_validate(spec)).id)


def search(job_id: str, hooks: tuple[Hooks, ...] = ()) -> list[int]:
    """Train the trials as the worker that took the job does; the reruns' part it sends."""
    sent: list[Part] = []
    assert execute_job(job_id, send_part=lambda *p: sent.append(p), extra_hooks=hooks) == "running"
    ((_, reruns, *_),) = sent
    return reruns


def runs_of(job_id: str) -> list[dict[str, Any]]:
    columns = ["id", "label", "role", "trial", "seed", "status", "hyperparameters"]
    columns += ["pruned_at_epoch", "selection_score", "test_loss", "test_accuracy"]
    columns += ["steps_done", "diverged"]
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        return [{c: getattr(run, c) for c in columns} for run in job.runs]


def epoch_values(run_ids: list[int], column: str) -> dict[int, dict[int, float]]:
    with unit_of_work() as session:
        rows = session.scalars(select(EpochMetric).where(EpochMetric.run_id.in_(run_ids)))
        out: dict[int, dict[int, float]] = {}
        for row in rows:
            out.setdefault(row.run_id, {})[row.epoch] = getattr(row, column)
        return out


def first_losses(run_ids: list[int]) -> dict[int, float]:
    with unit_of_work() as session:
        rows = session.scalars(
            select(StepMetric).where(StepMetric.run_id.in_(run_ids), StepMetric.step == 1)
        )
        return {row.run_id: row.loss for row in rows}


def of(runs: list[dict[str, Any]], role: str, label: str | None = None) -> list[dict[str, Any]]:
    return [r for r in runs if r["role"] == role and label in (None, r["label"])]


@pytest.mark.parametrize(
    ("rule", "metric", "pruned_per_rung"),
    [
        # keep ceil(n / 2): 6 -> 3 at epoch 1, 3 -> 2 at epoch 2; on the default metric,
        # whose values (correct / 360) tie often: ties go to the first trial
        ("successive_halving", None, {1: 3, 2: 1}),
        # strictly worse than the median: 6 -> 3 (the median lies between two losses),
        # 3 -> 2 (the middle one is the median)
        ("median", "val_loss", {1: 3, 2: 1}),
    ],
)
def test_pruning_ends_exactly_the_trials_the_rule_names_at_each_rung(
    embedded_home: Path,
    one_part: None,
    rule: str,
    metric: str | None,
    pruned_per_rung: dict[int, int],
) -> None:
    spec = study(pruning={"rule": rule, "min_epochs": 1, "reduction_factor": 2}, metric=metric)
    job_id = stored_study(spec)
    search(job_id)
    runs = runs_of(job_id)
    column = metric or "val_accuracy"
    higher = column.endswith("accuracy")
    trials = sorted(of(runs, TRIAL), key=lambda r: r["id"])  # the fused group's order
    values = epoch_values([r["id"] for r in trials], column)
    for label in LABELS:
        alive = [r for r in trials if r["label"] == label]
        for rung in (1, 2):
            named = to_prune(
                rule, {r["id"]: values[r["id"]][rung] for r in alive}, higher=higher,
                reduction_factor=2,
            )  # fmt: skip
            stopped = {r["id"] for r in alive if r["pruned_at_epoch"] == rung}
            assert stopped == named, (label, rung)
            assert len(stopped) == pruned_per_rung[rung]
            alive = [r for r in alive if r["id"] not in named]
        assert len(alive) == 2 and all(r["pruned_at_epoch"] is None for r in alive)
    for run in trials:  # a pruned trial succeeded, with its epochs up to the rung stored
        last = run["pruned_at_epoch"] or EPOCHS
        assert run["status"] == "succeeded" and not run["diverged"]
        assert sorted(values[run["id"]]) == list(range(1, last + 1))
        assert run["steps_done"] == last * STEPS_PER_EPOCH


class Phases(Hooks):
    """What the problem evaluates, in order, and which runs train meanwhile."""

    def __init__(self) -> None:
        self.training: dict[int, bool] = {}  # key -> is a trial
        self.events: list[tuple[str, bool]] = []  # (split, a trial was training)

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        self.training[run.key] = run.trial

    def on_run_end(self, run: RunConfig, result: Any) -> None:
        self.training.pop(run.key, None)

    def evaluated(self, split: str) -> None:
        self.events.append((split, any(self.training.values())))


def test_the_test_split_is_never_read_before_the_reruns(
    embedded_home: Path, one_part: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = Phases()
    evaluate = Problem.evaluate

    def recorded(self: Problem, members: Any, name: str) -> Any:
        watch.evaluated(name)
        return evaluate(self, members, name)

    monkeypatch.setattr(Problem, "evaluate", recorded)
    job_id = stored_study(STUDY)
    reruns = search(job_id, hooks=(watch,))
    searched = list(watch.events)
    assert ("val", True) in searched  # the instrument sees the trials' evaluations
    assert all(split == "val" for split, _ in searched), searched
    assert execute_part(job_id, reruns, threads=1, extra_hooks=(watch,)) == "succeeded"
    assert ("test", False) in watch.events[len(searched) :]  # read, by the reruns
    assert ("test", True) not in watch.events

    runs = runs_of(job_id)
    for trial in of(runs, TRIAL):
        assert trial["test_loss"] is None and trial["test_accuracy"] is None
    finals = of(runs, RERUN) + of(runs, BASELINE)
    assert len(finals) == 2 * 2 * 2  # two entries, tuned and one-shot, two seeds
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["test_loss"] > 0 for r in finals)


def test_reruns_use_seeds_the_search_never_used_the_same_for_every_entry(
    embedded_home: Path, one_part: None
) -> None:
    job_id = stored_study(STUDY)
    assert execute_part(job_id, search(job_id), threads=1) == "succeeded"
    runs = runs_of(job_id)
    assert {r["seed"] for r in of(runs, TRIAL)} == {3}
    for label in LABELS:
        assert sorted(r["seed"] for r in of(runs, RERUN, label)) == [4, 5]
        assert sorted(r["seed"] for r in of(runs, BASELINE, f"{label}:one-shot")) == [4, 5]
        # the rerun is the best trial's setting, the baseline the entry's given one
        best = max(of(runs, TRIAL, label), key=lambda r: r["selection_score"])
        assert {r["trial"] for r in of(runs, RERUN, label)} == {best["trial"]}
        assert all(r["hyperparameters"] == best["hyperparameters"] for r in of(runs, RERUN, label))
    # Common random numbers: one seed, the same initial weights and first batch for every
    # entry (the same first loss), and other ones than the search's seed.
    losses = first_losses([r["id"] for r in runs])
    search_loss = {round(losses[r["id"]], 6) for r in of(runs, TRIAL)}
    assert len(search_loss) == 1
    for seed in (4, 5):
        seeded = {round(losses[r["id"]], 6) for r in runs if r["seed"] == seed}
        assert len(seeded) == 1 and seeded != search_loss


def test_tpe_rounds_are_drawn_from_the_stored_trials_alone(
    embedded_home: Path, one_part: None
) -> None:
    """A tpe study trains a round, then draws the next from what is stored (no sampler state
    is kept anywhere else, so a worker that dies between rounds loses nothing): its second
    round is exactly what the sampler draws from the first round's stored settings and
    scores; then the reruns follow."""
    spec = study(sampler="tpe", trials=4, pruning=None, epochs=2)
    spec["tuning"]["round_size"] = 2
    job_id = stored_study(spec)
    first = runs_of(job_id)
    assert sorted((r["label"], r["trial"]) for r in first) == sorted(
        (label, n) for label in LABELS for n in (0, 1)
    )
    sent: list[Part] = []
    assert execute_job(job_id, send_part=lambda *p: sent.append(p)) == "running"
    ((_, second_round, *_),) = sent
    runs = runs_of(job_id)
    job_spec = JobSpec.model_validate(spec)
    assert job_spec.tuning is not None
    for entry in job_spec.optimizers:
        label = entry.display_label
        stored = sorted(
            (r for r in runs if r["label"] == label and r["id"] not in second_round),
            key=lambda r: r["trial"],
        )
        values = epoch_values([r["id"] for r in stored], "val_accuracy")
        history = [
            ({"lr": r["hyperparameters"]["lr"]}, max(values[r["id"]].values())) for r in stored
        ]
        expected = sampling.draw(
            entry.search or {},
            job_spec.tuning,
            seed=sampling.study_seed(3, label),
            count=2,
            history=history,
        )
        drawn = sorted(
            (r for r in runs if r["label"] == label and r["id"] in second_round),
            key=lambda r: r["trial"],
        )
        assert [r["trial"] for r in drawn] == [2, 3]
        assert [{"lr": r["hyperparameters"]["lr"]} for r in drawn] == expected
    assert execute_part(job_id, second_round, threads=1, send_part=lambda *p: sent.append(p)) == (
        "running"
    )
    (_, (_, reruns, *_)) = sent
    assert execute_part(job_id, reruns, threads=1) == "succeeded"
    runs = runs_of(job_id)
    for label in LABELS:
        assert sorted(r["trial"] for r in of(runs, TRIAL, label)) == [0, 1, 2, 3]
        assert sorted(r["seed"] for r in of(runs, RERUN, label)) == [4, 5]


# --- a worker's death mid-study ------------------------------------------------------------


class WorkerDied(BaseException):
    """Not an Exception: nothing in the worker catches it, as nothing survives a kill -9."""


class DieAfterCheckpoint(Hooks):
    """Kills the part at the first flush past ``after_step`` once a checkpoint is stored."""

    def __init__(self, after_step: int) -> None:
        self.after_step, self.checkpoints = after_step, 0

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        self.checkpoints += 1

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        if self.checkpoints and max(int(steps.step[-1]) for _, steps in batch) > self.after_step:
            raise WorkerDied


def age_heartbeats(job_id: str) -> None:
    """What the heartbeat timeout does to a dead worker's runs."""
    with unit_of_work() as session:
        session.execute(
            update(Run)
            .where(Run.job_id == store.get_job(session, job_id, with_runs=False).id)
            .values(heartbeat_at=store.database_now(session) - timedelta(hours=1))
        )


def outcome(job_id: str) -> list[tuple[Any, ...]]:
    """What a study decided, run by run: role, label, trial, seed, setting, rung, score."""
    return sorted(
        (
            r["role"],
            r["label"],
            r["trial"] if r["trial"] is not None else -1,
            r["seed"],
            r["hyperparameters"]["lr"],
            r["pruned_at_epoch"] or 0,
            round(r["selection_score"] or 0.0, 6),
        )
        for r in runs_of(job_id)
    )


def test_a_study_whose_worker_dies_in_the_search_and_in_the_reruns_loses_and_repeats_nothing(
    database: str, checkpointing: None
) -> None:
    reference = stored_study(STUDY)
    assert execute_part(reference, search(reference), threads=1) == "succeeded"

    job_id = stored_study(STUDY)
    sent: list[Part] = []
    with pytest.raises(WorkerDied):  # in epoch 2, after the first rung pruned half the trials
        execute_job(
            job_id, send_part=lambda *p: sent.append(p), extra_hooks=(DieAfterCheckpoint(24),)
        )
    runs = runs_of(job_id)
    assert sent == [] and {r["role"] for r in runs} == {TRIAL}
    assert {r["pruned_at_epoch"] for r in runs if r["status"] == "succeeded"} == {1}
    assert len([r for r in runs if r["status"] == "running"]) == 6

    age_heartbeats(job_id)
    trials = [r["id"] for r in runs]
    assert execute_part(job_id, trials, threads=1, send_part=lambda *p: sent.append(p)) == "running"
    ((_, reruns, *_),) = sent
    assert len(reruns) == 2 * 2 * 2
    with pytest.raises(WorkerDied):
        execute_part(job_id, reruns, threads=1, extra_hooks=(DieAfterCheckpoint(30),))
    assert {r["status"] for r in runs_of(job_id) if r["id"] in reruns} == {"running"}

    age_heartbeats(job_id)
    assert execute_part(job_id, reruns, threads=1) == "succeeded"
    runs = runs_of(job_id)
    for label in LABELS:  # every trial once, every rerun and baseline once per seed
        assert sorted(r["trial"] for r in of(runs, TRIAL, label)) == list(range(6))
        assert sorted(r["seed"] for r in of(runs, RERUN, label)) == [4, 5]
        assert sorted(r["seed"] for r in of(runs, BASELINE, f"{label}:one-shot")) == [4, 5]
    assert len(runs) == 2 * 6 + 2 * 2 * 2 and {r["status"] for r in runs} == {"succeeded"}
    # the same trials, rungs, choices and reruns as the study nobody interrupted
    assert outcome(job_id) == outcome(reference)
    with unit_of_work() as session:  # each run's steps stored once, none missing
        for run in runs:
            steps = session.scalars(
                select(StepMetric.step).where(StepMetric.run_id == run["id"])
            ).all()
            assert sorted(steps) == list(range(1, run["steps_done"] + 1)), run
