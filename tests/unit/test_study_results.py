"""A tuning study's answer: the trials table and its statuses, the study block (best
settings, budgets, steps against a full sweep, the expected best of k against a hand
computation), the summary ranked on the reruns with one-shot rows beside them, the trials
endpoint (pages, CSV, owners), ``optbench trials`` and the report's study tables."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.db.models import BASELINE, QUEUED, RERUN, RUNNING, SUCCEEDED, TRIAL
from services.spec import JobSpec
from services.study import results
from services.summary import RunView
from tests.support import local_client


def study_spec(**tuning: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "study",
            "dataset": {"name": "digits", "val_fraction": 0.2},
            "model": {"name": "mlp", "hidden": [8]},
            "optimizers": [
                {"name": "sgd", "lr": 0.05, "search": {"lr": {"log_uniform": [1e-3, 1.0]}}},
                {"name": "adam", "lr": 0.001, "search": {"lr": {"log_uniform": [1e-4, 0.1]}}},
            ],
            "epochs": 4,
            "seeds": [0],
            "target": {"metric": "val_accuracy", "value": 0.9},
            "tuning": {"trials": 4, "sampler": "quasirandom", "rerun_seeds": 2, **tuning},
        }
    )


@dataclass
class FakeRun:
    """A stored run as results.py reads one (the StoredRun protocol)."""

    id: int
    label: str
    trial: int | None
    status: str = SUCCEEDED
    role: str = TRIAL
    diverged: bool = False
    pruned_at_epoch: int | None = None
    selection_score: float | None = None
    steps_done: int = 40
    total_steps: int | None = 40
    seed: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=lambda: {"lr": 0.01})

    @property
    def optimizer(self) -> str:
        return self.label.split(":")[0]


def val_epochs(*scores: float) -> dict[str, list[Any]]:
    return {"epoch": list(range(1, len(scores) + 1)), "val_accuracy": list(scores)}


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


# sgd: three completed trials (best epochs 0.5, 0.7, 0.9), one pruned at epoch 1 whose score
# 0.95 is the highest (a pruned trial still counts for the best trial, as the search's end
# chooses it, but not for the expected best of k); adam: one diverged, one running, two
# queued.
SGD_EPOCHS = {1: (0.3, 0.5), 2: (0.7, 0.6), 3: (0.2, 0.9), 4: (0.95,)}
SEARCH_RUNS = [
    *(FakeRun(i, "sgd", i - 1, steps_done=40, hyperparameters={"lr": 0.1 * i}) for i in (1, 2, 3)),
    FakeRun(4, "sgd", 3, pruned_at_epoch=1, steps_done=10, hyperparameters={"lr": 0.4}),
    FakeRun(5, "adam", 0, diverged=True, steps_done=7),
    FakeRun(6, "adam", 1, status=RUNNING, steps_done=20),
    FakeRun(7, "adam", 2, status=QUEUED, steps_done=0, total_steps=None),
    FakeRun(8, "adam", 3, status=QUEUED, steps_done=0, total_steps=None),
]
SEARCH_EPOCHS = {i: val_epochs(*s) for i, s in SGD_EPOCHS.items()} | {
    5: val_epochs(0.1),
    6: val_epochs(0.4, 0.6),
}


def test_trial_statuses_scores_and_order() -> None:
    spec = study_spec()
    found = results.trials(spec, list(reversed(SEARCH_RUNS)), SEARCH_EPOCHS)
    assert [(t.label, t.trial) for t in found] == [("sgd", i) for i in range(4)] + [
        ("adam", i) for i in range(4)
    ]
    assert [t.status for t in found] == [
        "completed",
        "completed",
        "completed",
        "pruned",
        "diverged",
        "running",
        "queued",
        "queued",
    ]
    by_id = {t.run_id: t for t in found}
    assert by_id[4].rung == 1 and by_id[4].steps_trained == 10 and by_id[1].rung is None
    # scores from the epochs (the best epoch) while nothing is stored; a running trial so far
    assert [by_id[i].selection_score for i in (1, 2, 3, 4, 6)] == [0.5, 0.7, 0.9, 0.95, 0.6]
    assert by_id[7].selection_score is None
    assert by_id[1].values == {"lr": 0.1}
    # a stored score wins over the series; a non-finite one is no score
    stored = [FakeRun(1, "sgd", 0, selection_score=0.123), FakeRun(2, "sgd", 1)]
    stored[1].selection_score = math.nan
    scores = [t.selection_score for t in results.trials(spec, stored, SEARCH_EPOCHS)]
    assert scores == [0.123, None]


def test_study_block_while_searching_with_the_expected_best_of_k() -> None:
    spec = study_spec()
    found = results.trials(spec, SEARCH_RUNS, SEARCH_EPOCHS)
    block = results.study_block(spec, SEARCH_RUNS, found, finished=False)
    assert block["phase"] == "search" and block["rerun_seeds"] == [1, 2]
    assert block["sampler"] == "quasirandom" and block["expected_best_note"] is None
    sgd, adam = block["entries"]
    assert (sgd["completed"], sgd["pruned"], sgd["diverged"], sgd["unfinished"]) == (3, 1, 0, 0)
    assert (adam["completed"], adam["diverged"], adam["unfinished"]) == (0, 1, 3)
    # steps: 3 x 40 + 10 trained of 4 x 40; adam 7 + 20 of 4 x 40 (the known full length)
    assert (sgd["steps_trained"], sgd["full_sweep_steps"]) == (130, 160)
    assert (adam["steps_trained"], adam["full_sweep_steps"]) == (27, 160)
    assert (block["steps_trained"], block["full_sweep_steps"]) == (157, 320)
    # the best so far: the pruned trial's 0.95 (the search's own rule), with its setting
    assert sgd["best"]["trial"] == 3 and sgd["best"]["values"] == {"lr": 0.4}
    assert sgd["best"]["selection_score"] == 0.95
    # E[max of k] over the completed 0.5, 0.7, 0.9 (the pruned and diverged left out):
    # k=1: the mean 0.7; k=2: 0.5/9 + 0.7*3/9 + 0.9*5/9; k=3: (0.5 + 0.7*7 + 0.9*19)/27
    assert sgd["expected_best_of_k"] == [approx(0.7), approx(7.1 / 9), approx(22.5 / 27)]
    # no completed adam trial yet: no curve, and no best so far: the only finished one
    # diverged, and a diverged setting is never chosen (phases.py's rule too)
    assert adam["expected_best_of_k"] == [] and adam["best"] is None
    assert block["budget_note"] is None


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_no_expected_best_for_samplers_whose_trials_are_not_independent_draws(
    sampler: str,
) -> None:
    space = {"grid": [0.01, 0.1, 1.0]} if sampler == "grid" else {"log_uniform": [1e-3, 1.0]}
    spec = JobSpec.model_validate(
        {
            **study_spec().model_dump(mode="json", exclude={"optimizers", "tuning"}),
            "optimizers": [{"name": "sgd", "lr": 0.1, "search": {"lr": space}}],
            "tuning": {"trials": 8, "sampler": sampler},
        }
    )
    runs = [FakeRun(i, "sgd", i - 1) for i in (1, 2, 3)]
    block = results.study_block(spec, runs, results.trials(spec, runs, {}), finished=True)
    (entry,) = block["entries"]
    assert entry["expected_best_of_k"] is None
    assert block["expected_best_note"].startswith(f"{sampler}: ")
    # a grid's budget is at most its points
    assert entry["budget"] == (3 if sampler == "grid" else 8)


def test_unequal_budgets_get_a_note_and_an_unsearched_entry_has_one_trial() -> None:
    base = study_spec().model_dump(mode="json", exclude={"optimizers", "tuning"})
    spec = JobSpec.model_validate(
        {
            **base,
            "optimizers": [
                {"name": "sgd", "lr": 0.1, "search": {"lr": {"log_uniform": [1e-3, 1.0]}}},
                {"name": "adam", "lr": 0.01, "search": {"lr": {"log_uniform": [1e-4, 0.1]}}},
                {"name": "rmsprop", "lr": 0.01},
            ],
            "tuning": {"trials": {"sgd": 8, "adam": 4}},
        }
    )
    block = results.study_block(spec, [], [], finished=False)
    assert [e["budget"] for e in block["entries"]] == [8, 4, 1]
    assert [e["searched"] for e in block["entries"]] == [True, True, False]
    assert block["budget_note"] is not None and "sgd 8, adam 4" in block["budget_note"]
    assert block["entries"][2]["expected_best_of_k"] is None
    assert block["full_sweep_steps"] is None  # nothing has started: no trial length known


def answer_views() -> list[RunView]:
    """Reruns and baselines on seeds 1, 2 (steps per epoch 10), and trials that must not count."""

    def view(label: str, seed: int, role: str, finals: list[float], test: float) -> RunView:
        epochs = {
            "epoch": list(range(1, len(finals) + 1)),
            "step": [10 * k for k in range(1, len(finals) + 1)],
            "train_loss": [1.0] * len(finals),
            "val_accuracy": finals,
            "train_seconds": [1.0 * k for k in range(1, len(finals) + 1)],
        }
        return RunView(label, False, epochs, seed, 0.5, 1 - test, test, role)

    return [
        # a trial far better than everything: a trial never enters the rows
        view("sgd", 0, TRIAL, [0.99, 0.99], 0.99),
        view("sgd", 1, RERUN, [0.8, 0.92], 0.90),
        view("sgd", 2, RERUN, [0.85, 0.94], 0.92),
        view("sgd:one-shot", 1, BASELINE, [0.5, 0.7], 0.70),
        view("sgd:one-shot", 2, BASELINE, [0.6, 0.74], 0.72),
        view("adam", 1, RERUN, [0.91, 0.95], 0.94),
        view("adam", 2, RERUN, [0.93, 0.96], 0.95),
        view("adam:one-shot", 1, BASELINE, [0.9, 0.93], 0.93),
        view("adam:one-shot", 2, BASELINE, [0.7, 0.85], 0.80),
    ]


def test_the_summary_ranks_the_reruns_with_one_shot_rows_beside_them() -> None:
    spec = study_spec()
    summary = results.study_summary(spec, answer_views(), {"phase": "complete"})
    rows = summary["optimizers"]
    assert [(r["label"], r["role"], r["rank"]) for r in rows] == [
        ("sgd", "tuned", 2),
        ("sgd:one-shot", "one-shot", None),
        ("adam", "tuned", 1),
        ("adam:one-shot", "one-shot", None),
    ]
    assert summary["best"] == "adam" and summary["study"] == {"phase": "complete"}
    sgd, sgd_one, adam, adam_one = rows
    # over the two reruns only (the trial's 0.99 is not in them)
    assert sgd["runs"] == 2 and sgd["final_target"] == approx(0.93)
    assert sgd["test_accuracy"] == approx(0.91) and adam["test_accuracy"] == approx(0.945)
    # adam reaches 0.9 at epoch 1 in both seeds, sgd at epoch 2
    assert adam["steps_to_target"] == 10 and sgd["steps_to_target"] == 20
    # tuned rows are paired against the best tuned label, seed by seed: 0.92-0.95, 0.94-0.96
    assert sgd["paired"]["reference"] == "adam" and sgd["paired"]["seeds"] == [1, 2]
    assert sgd["paired"]["differences"] == [approx(-0.03), approx(-0.02)]
    assert adam["paired"] is None
    # a one-shot row against its own tuned label: 0.7 - 0.92, 0.74 - 0.94
    assert sgd_one["paired"]["reference"] == "sgd"
    assert sgd_one["paired"]["differences"] == [approx(-0.22), approx(-0.2)]
    assert sgd_one["paired"]["mean"] == approx(-0.21)
    assert adam_one["paired"]["differences"] == [approx(0.93 - 0.95), approx(0.85 - 0.96)]
    assert sgd_one["target_reached"] == "0/2" and adam_one["target_reached"] == "1/2"


def test_while_searching_the_summary_has_no_rows_and_without_baselines_no_one_shot() -> None:
    trials_only = [v for v in answer_views() if v.role == TRIAL]
    summary = results.study_summary(study_spec(), trials_only, {"phase": "search"})
    assert summary["optimizers"] == [] and summary["best"] is None
    no_baseline = results.study_summary(study_spec(baseline=False), answer_views(), {})
    assert [r["label"] for r in no_baseline["optimizers"]] == ["sgd", "adam"]


def test_the_api_models_keep_a_study_summary_and_default_a_plain_one() -> None:
    from services.api.schemas import SummaryOut

    spec = study_spec()
    found = results.trials(spec, SEARCH_RUNS, SEARCH_EPOCHS)
    block = results.study_block(spec, SEARCH_RUNS, found, finished=False)
    summary = json.loads(
        json.dumps(results.study_summary(spec, answer_views(), block), allow_nan=False)
    )
    assert SummaryOut.model_validate(summary).model_dump(mode="json") == summary
    plain = {k: v for k, v in summary.items() if k != "study"}
    plain["optimizers"] = [
        {k: v for k, v in row.items() if k != "role"} for row in summary["optimizers"]
    ]
    read = SummaryOut.model_validate(plain)
    assert read.study is None and {row.role for row in read.optimizers} == {None}


# ------------------------------------------------------------------ stored studies


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    from services.api.app import create_app

    with local_client(create_app()) as client:
        yield client


def _epoch_rows(scores: list[float], steps_per_epoch: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "epoch": e,
            "step": steps_per_epoch * e,
            "train_loss": 1.0 / e,
            "train_accuracy": None,
            "val_loss": 1.0 - score,
            "val_accuracy": score,
            "train_seconds": 0.5 * e,
            "distance": None,
        }
        for e, score in enumerate(scores, start=1)
    ]


def store_search(owner: str = "local") -> str:
    """A study with its trials trained: per label trial 0 completed, 1 pruned at epoch 1,
    2 diverged, 3 completed; returns the job id."""
    from services.db import metric_writes, store
    from services.db.session import unit_of_work

    scores = {0: [0.5, 0.8], 1: [0.3], 2: [0.2], 3: [0.6, 0.7]}
    with unit_of_work() as session:
        job = store.create_job(session, study_spec(), owner=owner)
        job.status = RUNNING
        for run in job.runs:
            assert run.role == TRIAL and run.trial is not None
            bonus = 0.1 if run.label == "adam" else 0.0
            values = [min(1.0, s + bonus) for s in scores[run.trial]]
            metric_writes.write_epochs(session, run.id, _epoch_rows(values))
            run.status, run.total_steps, run.steps_done = SUCCEEDED, 20, 10 * len(values)
            run.pruned_at_epoch = 1 if run.trial == 1 else None
            run.diverged = run.trial == 2
        return str(job.id)


def test_a_running_study_s_summary_and_trials_endpoint(client: TestClient) -> None:
    job_id = store_search()
    summary = client.get(f"/v1/jobs/{job_id}/summary")
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["optimizers"] == [] and body["best"] is None
    assert body["study"]["phase"] == "search"
    sgd, adam = body["study"]["entries"]
    assert (sgd["completed"], sgd["pruned"], sgd["diverged"]) == (2, 1, 1)
    assert sgd["steps_trained"] == 20 + 10 + 10 + 20 and sgd["full_sweep_steps"] == 80
    assert sgd["best"]["trial"] == 0 and sgd["best"]["selection_score"] == approx(0.8)
    assert adam["best"]["selection_score"] == approx(0.9)
    # completed sgd trials 0.8 and 0.7: k=1 0.75, k=2 0.7/4 + 0.8*3/4
    assert sgd["expected_best_of_k"] == [approx(0.75), approx(0.775)]

    page = client.get(f"/v1/jobs/{job_id}/trials", params={"limit": 3, "offset": 2})
    assert page.status_code == 200, page.text
    listing = page.json()
    assert (listing["total"], listing["limit"], listing["offset"]) == (8, 3, 2)
    assert listing["selection_metric"] == "val_accuracy" and listing["higher_is_better"]
    assert listing["searched"] == {"sgd": ["lr"], "adam": ["lr"]}
    assert [(t["label"], t["trial"], t["status"]) for t in listing["items"]] == [
        ("sgd", 2, "diverged"),
        ("sgd", 3, "completed"),
        ("adam", 0, "completed"),
    ]
    first = client.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    pruned = first[1]
    assert (pruned["status"], pruned["rung"], pruned["steps_trained"]) == ("pruned", 1, 10)
    assert pruned["values"]["lr"] == pruned["hyperparameters"]["lr"]
    assert 1e-3 <= pruned["values"]["lr"] <= 1.0

    text = client.get(f"/v1/jobs/{job_id}/trials", params={"format": "csv"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/csv")
    assert text.headers["x-total-count"] == "8"
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert [r["status"] for r in rows] == ["completed", "pruned", "diverged", "completed"] * 2
    assert rows[1]["rung"] == "1" and rows[0]["rung"] == ""
    assert float(rows[0]["search.lr"]) == approx(first[0]["values"]["lr"])
    assert json.loads(rows[0]["hyperparameters"]) == first[0]["hyperparameters"]


def test_the_trials_of_another_owner_or_a_plain_job_are_not_found(client: TestClient) -> None:
    from services.db import store
    from services.db.session import unit_of_work

    theirs = store_search(owner="someone-else")
    response = client.get(f"/v1/jobs/{theirs}/trials")
    assert response.status_code == 404 and "tuning" not in response.json()["detail"]
    plain = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"name": "linear"},
            "optimizers": [{"name": "sgd"}],
        }
    )
    with unit_of_work() as session:
        plain_id = store.create_job(session, plain).id
    response = client.get(f"/v1/jobs/{plain_id}/trials")
    assert response.status_code == 404
    assert "not a tuning study" in response.json()["detail"]
    assert client.get(f"/v1/jobs/{plain_id}/trials", params={"limit": 0}).status_code == 422


def finish_study(job_id: str) -> None:
    """End the search as the workers do (phases.advance), then train the reruns and
    baselines: tuned runs reach 0.95, one-shot runs 0.6 (adam's tuned 0.97)."""
    from services.db import metric_writes, store
    from services.db.models import Job
    from services.db.session import unit_of_work
    from services.study import phases

    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        new = phases.advance(session, job)
        assert {run.role for run in new} == {RERUN, BASELINE}
        for run in new:
            tuned = 0.97 if run.label == "adam" else 0.95
            score = tuned if run.role == RERUN else 0.6
            metric_writes.write_epochs(session, run.id, _epoch_rows([score - 0.1, score]))
            run.status, run.total_steps, run.steps_done = SUCCEEDED, 20, 20
            run.test_loss, run.test_accuracy = 0.2, score - 0.01
        assert isinstance(job, Job)


def test_a_finished_study_s_summary_is_ranked_on_its_reruns(client: TestClient) -> None:
    from services.db import store
    from services.db.session import unit_of_work
    from services.summary import job_summary

    job_id = store_search()
    finish_study(job_id)
    with unit_of_work() as session:
        summary = job_summary(session, store.get_job(session, job_id))
    rows = {row["label"]: row for row in summary["optimizers"]}
    assert list(rows) == ["sgd", "sgd:one-shot", "adam", "adam:one-shot"]
    assert summary["best"] == "adam" and rows["sgd"]["rank"] == 2
    assert rows["sgd"]["runs"] == 2 and rows["sgd"]["final_target"] == approx(0.95)
    assert rows["sgd"]["test_accuracy"] == approx(0.94)  # the reruns' only
    assert rows["sgd:one-shot"]["role"] == "one-shot" and rows["sgd:one-shot"]["rank"] is None
    assert rows["sgd:one-shot"]["paired"]["mean"] == approx(0.6 - 0.95)
    study = summary["study"]
    assert study["phase"] == "complete" and study["rerun_seeds"] == [1, 2]
    # the best setting is the one the reruns carry: trial 0 (0.8 beat 0.7 and the pruned 0.3)
    assert [e["best"]["trial"] for e in study["entries"]] == [0, 0]
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        reruns = [r for r in job.runs if r.role == RERUN and r.label == "sgd"]
        best_trial = next(r for r in job.runs if r.role == TRIAL and r.trial == 0)
        assert {r.seed for r in reruns} == {1, 2}
        assert all(r.hyperparameters == best_trial.hyperparameters for r in reruns)
        assert study["entries"][0]["best"]["hyperparameters"] == best_trial.hyperparameters
        # the scores stored at the search's end are what the trials table shows now
        assert best_trial.selection_score == approx(0.8)
    trials = client.get(f"/v1/jobs/{job_id}/trials").json()
    assert trials["total"] == 8  # reruns and baselines are not trials
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_the_report_shows_the_study_s_tables(client: TestClient) -> None:
    from services.report import render_report

    job_id = store_search()
    running = render_report(job_id)
    assert 'id="trials"' in running and "Trials (8;" in running
    assert "Best settings" in running and "Tuned versus one-shot" not in running
    assert running.count('<td class="text">pruned</td>') == 2
    finish_study(job_id)
    html = render_report(job_id)
    assert "Tuned versus one-shot" in html and "sgd:one-shot" in html
    # 60 of 80 steps per label: 120 of 160 in all, 25 % saved
    assert "120 / 160 (25% saved)" in html
    assert html.count(" ★</td>") == 2  # the best trial of each optimizer


def test_optbench_trials_prints_the_table_json_and_csv(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.api.app import create_app
    from services.cli import main, remote
    from services.client import ApiClient

    def test_api(url: str | None, key: str | None) -> ApiClient:
        """The CLI's client on the app in this process (each command closes its own)."""
        api = ApiClient("http://testserver")
        api.http = local_client(create_app())
        return api

    monkeypatch.setattr(remote, "client", test_api)
    monkeypatch.setattr(remote, "TRIALS_PAGE", 3)  # three pages for eight trials
    job_id = store_search()
    assert main(["trials", job_id]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 trials, sampler quasirandom; score: val_accuracy")
    lines = [line.split() for line in out.splitlines()[3:]]
    assert [(line[0], line[1], line[4]) for line in lines][:4] == [
        ("sgd", "0", "completed"),
        ("sgd", "1", "pruned"),
        ("sgd", "2", "diverged"),
        ("sgd", "3", "completed"),
    ]
    assert lines[0][3] == "80.00%" and lines[1][5] == "1" and lines[1][6] == "10/20"
    assert main(["trials", job_id, "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["total"] == len(page["items"]) == 8
    assert main(["trials", job_id, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8 and rows[1]["status"] == "pruned"


def test_list_trials_scores_unscored_trials_from_the_database(database: str) -> None:
    """list_trials reads the scores of unscored trials in one query, on either database."""
    job_id = store_search()
    listing = results.list_trials(job_id, owner="local", limit=None)
    assert listing.total == len(listing.items) == 8
    assert [t.selection_score for t in listing.items[:4]] == [
        approx(0.8),
        approx(0.3),
        approx(0.2),
        approx(0.7),
    ]
