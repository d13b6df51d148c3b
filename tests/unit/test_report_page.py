"""The HTML report and the chart data it shares with the web page, on jobs run in-process
(tests/unit/test_report.py's module fixture). What the browser draws from this data is
tested in headless Chromium (tests/e2e/test_charts.py)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.report import ReportData, RunInfo, assets, build_page, chart_data, load
from services.report.chart_data import contour_levels
from services.report.landscapes import LANDSCAPES
from tests.support import unavailable
from tests.unit.test_report import LECTURE, Jobs, jobs  # noqa: F401 (the module fixture)

LABELS = ["gd", "sgd", "momentum", "adagrad", "adam.slow:1e-3"]
HOSTILE = "</script><script>alert('x')</script>&amp;\"<b>"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class _Balance(HTMLParser):
    """Every non-void element closed, in order; the scripts' texts collected."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts: list[tuple[str | None, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append((dict(attrs).get("type"), ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            kind, text = self.scripts[-1]  # the parser may hand a script over in pieces
            self.scripts[-1] = (kind, text + data)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def parse_page(page: str) -> _Balance:
    """Balanced HTML that loads nothing from anywhere; returns the parse (scripts kept)."""
    assert page.startswith("<!DOCTYPE html>")
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(?!#)""", page)
    assert "@import" not in page and "url(http" not in page
    module = next(text for kind, text in checker.scripts if kind == "module")
    assert "fetch(" not in module and "XMLHttpRequest" not in module
    return checker


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="ob-chart-data">(.*?)</script>', page)
    assert found is not None
    return json.loads(found.group(1))


def test_the_report_embeds_the_charts_endpoints_data_and_runs_only_its_own_scripts(
    jobs: Jobs,  # noqa: F811
) -> None:
    response = jobs.client.get(f"/v1/jobs/{jobs.lecture}/report")
    assert response.status_code == 200
    page = response.text
    parsed = parse_page(page)
    kinds = [kind for kind, _ in parsed.scripts]
    assert kinds == ["application/json", None, "module"]  # uPlot, the data, the charts

    # One picture of a job: the report draws the same data the page's endpoint serves.
    served = jobs.client.get(f"/v1/jobs/{jobs.lecture}/charts")
    assert served.status_code == 200
    assert embedded_data(page) == served.json()

    # The CSP allows exactly the two inline scripts that run, by hash, and no fetch.
    csp = response.headers["content-security-policy"]
    allowed = set(re.findall(r"'sha256-[^']+'", csp))
    running = {
        assets.script_hash(text) for kind, text in parsed.scripts if kind != "application/json"
    }
    assert allowed == running and len(allowed) == 2
    assert (
        "default-src 'none'" in csp
        and "connect-src" not in csp
        and "unsafe-inline" not in csp.split("style-src")[0]
    )

    summary = jobs.client.get(f"/v1/jobs/{jobs.lecture}/summary").json()
    table = page[page.index('<section id="summary">') : page.index("</section>")]
    rows = re.findall(r"<tbody>(.*?)</tbody>", table, flags=re.S)[0].split("</tr>")[:-1]
    assert len(rows) == len(LABELS) == len(summary["optimizers"])
    assert '<section id="charts">' in page and "<noscript>" in page
    assert '<section id="spec">' in page and "<dt>device</dt><dd>cpu</dd>" in page


def test_the_inlined_chart_module_is_valid_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs): it checks the inline module")
    result = subprocess.run(
        [node, "--input-type=module", "--check"],
        input=assets.module(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not [line for line in assets.module().splitlines() if line.startswith("import ")]


def test_chart_data_holds_every_stored_point_and_field(jobs: Jobs) -> None:  # noqa: F811
    data = jobs.client.get(f"/v1/jobs/{jobs.lecture}/charts").json()
    metrics = jobs.client.get(f"/v1/jobs/{jobs.lecture}/metrics?granularity=step").json()
    epochs = jobs.client.get(f"/v1/jobs/{jobs.lecture}/metrics?granularity=epoch").json()
    assert [entry["label"] for entry in data["labels"]] == LABELS  # the spec's order
    assert all(entry["seeds"] == 3 for entry in data["labels"])
    assert data["bucket"] == 1 and data["finished"] and data["task"] == "classification"
    assert data["smoothing"] == 0.9 and data["landscape"] is None
    assert data["target"] == {
        "metric": "val_accuracy",
        "column": "val_accuracy",
        "value": 0.9,
        "higher_is_better": True,
        "text": "val_accuracy ≥ 0.9",
    }
    assert len(data["runs"]) == 15
    for run in metrics["runs"]:
        drawn = data["steps"][str(run["run_id"])]
        stored = run["series"]
        for field in ("step", "loss", "accuracy", "train_seconds"):
            assert drawn[field] == pytest.approx(stored[field], rel=0, abs=0), field
        assert all(0.0 <= a <= 1.0 for a in drawn["accuracy"])
        # fractional epochs: epoch e's steps run from just above e - 1 up to e
        for epoch, fraction in zip(stored["epoch"], drawn["epoch"], strict=True):
            assert epoch - 1 < fraction <= epoch
        ends = [
            f
            for e, f, nxt in zip(
                stored["epoch"], drawn["epoch"], [*stored["epoch"][1:], 0], strict=True
            )
            if nxt != e
        ]
        assert ends == [1.0, 2.0, 3.0]
    for run in epochs["runs"]:
        drawn = data["epochs"][str(run["run_id"])]
        for field in ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "train_seconds"):
            assert drawn[field] == run["series"][field], field
    bars = {row["label"]: row for row in data["bars"]}
    for row in jobs.client.get(f"/v1/jobs/{jobs.lecture}/summary").json()["optimizers"]:
        assert bars[row["label"]]["steps_to_target"] == row["steps_to_target"]
        assert bars[row["label"]]["target_reached"] == row["target_reached"]


def test_long_series_are_bucket_means_on_edges_every_run_shares(jobs: Jobs) -> None:  # noqa: F811
    data = jobs.client.get(f"/v1/jobs/{jobs.lecture}/charts?max_points=10").json()
    metrics = jobs.client.get(f"/v1/jobs/{jobs.lecture}/metrics?granularity=step").json()
    longest = max(max(run["series"]["step"]) for run in metrics["runs"])
    width = data["bucket"]
    assert width == -(-longest // 10) > 1
    for run in metrics["runs"]:
        stored = run["series"]
        steps = np.array(stored["step"])
        drawn = data["steps"][str(run["run_id"])]
        if len(steps) <= 10:  # a short run keeps its own points (below)
            assert drawn["step"] == stored["step"]
            continue
        keys = (steps - 1) // width
        assert len(drawn["step"]) == len(set(keys.tolist())) <= 10
        for i, key in enumerate(sorted(set(keys.tolist()))):
            inside = keys == key
            assert drawn["step"][i] == steps[inside].max()
            for field in ("loss", "accuracy", "train_seconds"):
                expected = np.array(stored[field], dtype=float)[inside].mean()
                assert drawn[field][i] == pytest.approx(expected, rel=1e-12), field
    # a full-batch run (gd: one step per epoch) keeps its own few points
    gd = next(r for r in metrics["runs"] if r["label"] == "gd")
    assert data["steps"][str(gd["run_id"])]["step"] == gd["series"]["step"] == [1, 2, 3]
    assert jobs.client.get(f"/v1/jobs/{jobs.lecture}/charts?max_points=1").status_code == 422
    assert jobs.client.get(f"/v1/jobs/{uuid.uuid4()}/charts").status_code == 404


def test_landscape_chart_data_has_the_contour_the_minimum_and_every_path(
    jobs: Jobs,  # noqa: F811
) -> None:
    data = jobs.client.get(f"/v1/jobs/{jobs.rosenbrock}/charts").json()
    assert data["task"] == "landscape" and data["smoothing"] == 0.0
    view = data["landscape"]
    assert view["name"] == "rosenbrock" and view["minima"] == [[1.0, 1.0]]
    (x0, x1), (y0, y1) = view["x_range"], view["y_range"]
    assert x0 <= -1.5 < 1.0 <= x1 and y0 <= 1.0 < 2.0 <= y1  # the start and the minimum
    assert len(view["levels"]) >= 10
    values = [level["value"] for level in view["levels"]]
    assert values == sorted(values) and values[0] > 0
    for level in view["levels"]:
        for line in level["lines"]:
            points = np.array(line)
            assert points.shape[1] == 2 and len(points) >= 2
            assert (points[:, 0] >= x0 - 1e-9).all() and (points[:, 0] <= x1 + 1e-9).all()
            # on the line, f is the level's value (to the grid's resolution)
            f = LANDSCAPES["rosenbrock"]().function(points[:, 0], points[:, 1])
            assert np.median(np.abs(np.log(f + 1e-12) - np.log(level["value"] + 1e-12))) < 0.25
    assert len(data["runs"]) == 6
    for run in data["runs"]:
        path = data["steps"][run["id"]]
        assert len(path["x"]) == len(path["y"]) == 300
        assert (path["x"][0], path["y"][0]) == pytest.approx((-1.5, 2.0), abs=0.5)
        assert len(data["epochs"][run["id"]]["distance"]) == 300


def test_contour_levels_of_a_bowl_are_circles() -> None:
    levels = contour_levels(lambda x, y: x**2 + y**2, (-1.0, 1.0), (-1.0, 1.0))
    assert len(levels) >= 10
    for level in levels:
        for line in level["lines"]:
            radius = np.hypot(*np.array(line).T)
            assert radius.std() < 0.02 and abs(radius.mean() ** 2 - level["value"]) < 0.05


def test_hostile_names_stay_text_in_the_page_and_its_data() -> None:
    now = datetime.now(UTC)
    run = RunInfo(1, HOSTILE, "sgd", 0, "succeeded", 2, 2, False, None, None, None, {"lr": 0.1})
    data = ReportData(
        job_id=str(uuid.uuid4()),
        name=HOSTILE,
        status="succeeded",
        error=HOSTILE,
        device="cpu",
        created_at=now,
        started_at=now,
        finished_at=now,
        spec={"name": HOSTILE},
        summary={"task": "classification", "optimizers": [{"label": HOSTILE, "rank": 1}]},
        runs=[run],
        steps={1: {"step": [1, 2], "epoch": [1, 1], "loss": [1.0, float("nan")]}},
        epochs={1: {"epoch": [1], "step": [2], "val_accuracy": [0.5]}},
    )
    page = build_page(data, smoothing=0.5)
    parsed = parse_page(page)
    assert [kind for kind, _ in parsed.scripts] == ["application/json", None, "module"]
    assert page.count("<script") == 3  # the hostile name opened none of its own
    embedded = embedded_data(page)
    assert embedded["labels"][0]["label"] == HOSTILE  # JSON round trip, nothing broke out
    assert embedded["steps"]["1"]["loss"] == [1.0, None]  # NaN is null, JSON has no NaN
    assert chart_data(data, smoothing=0.5) == embedded


def test_chart_assets_are_the_files_the_web_page_serves() -> None:
    web = Path(assets.WEB_DIR)
    module = assets.module()
    for name in assets.MODULES:
        body = "".join(
            line + "\n"
            for line in (web / name).read_text(encoding="utf-8").splitlines()
            if not line.startswith("import ")
        )
        assert body.strip()[:200] in module
    assert assets.library() == (web / "vendor/uPlot.iife.min.js").read_text(encoding="utf-8")


def test_ranks_show_only_once_a_job_has_finished(jobs: Jobs) -> None:  # noqa: F811
    def rank_cells(page: str) -> list[str]:
        table = page[page.index('<section id="summary">') : page.index("</section>")]
        body = re.findall(r"<tbody>(.*?)</tbody>", table, flags=re.S)[0]
        return [row.split("</td>")[0].split(">")[-1] for row in body.split("</tr>")[:-1]]

    finished = jobs.client.get(f"/v1/jobs/{jobs.lecture}/report").text
    assert sorted(rank_cells(finished)) == [str(n) for n in range(1, len(LABELS) + 1)]
    queued = jobs.client.post("/v1/jobs", json={**LECTURE, "name": "not run"}).json()["id"]
    page = jobs.client.get(f"/v1/jobs/{queued}/report").text
    assert rank_cells(page) == ["&ndash;"] * len(LABELS)  # nothing trained: no ranks
    assert "still running" in page
    loaded = load(jobs.lecture)
    running = build_page(replace(loaded, status="running"), smoothing=0.9)
    assert all(cell.endswith(" (provisional)") for cell in rank_cells(running))


# ---------------------------------------------------------------- tuning studies

# Two searched optimizers with 4 quasirandom trials each, successive halving at epoch 2
# (half of each go on), and an entry whose learning rates diverge (an unequal budget of 2).
STUDY = {
    "name": "report test: a small study",
    "dataset": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizers": [
        {"name": "sgd", "lr": 0.05, "search": {"lr": {"log_uniform": [1e-3, 1.0]}}},
        {"name": "adam", "lr": 1e-3, "search": {"lr": {"log_uniform": [1e-4, 0.1]}}},
        {"name": "sgd", "label": "sgd.hot", "lr": 50, "search": {"lr": {"log_uniform": [20, 500]}}},
    ],
    "epochs": 3,
    "batch_size": 64,
    "tuning": {
        "trials": {"sgd": 4, "adam": 4, "sgd.hot": 2},
        "sampler": "quasirandom",
        "rerun_seeds": 2,
        "pruning": {"rule": "successive_halving", "min_epochs": 2, "reduction_factor": 2},
    },
}


@pytest.fixture(scope="module")
def study(jobs: Jobs) -> str:  # noqa: F811 (on the module's embedded default)
    from workers.execution import execute_job

    response = jobs.client.post("/v1/jobs", json=STUDY)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    execute_job(job_id)  # no queue: the search, then the reruns, trained here
    assert jobs.client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    return job_id


def stored_study_runs(job_id: str) -> list[Any]:
    from sqlalchemy import select

    from services.db.models import Run
    from services.db.session import unit_of_work

    with unit_of_work() as session:
        runs = session.scalars(select(Run).where(Run.job_id == uuid.UUID(job_id))).all()
        session.expunge_all()
        return list(runs)


def brute_expected_best(scores: list[float], k: int) -> float:
    """E[max of k draws with replacement], by enumerating every k-tuple."""
    tuples = list(itertools.product(scores, repeat=k))
    return sum(max(t) for t in tuples) / len(tuples)


def test_a_studys_chart_data_has_its_trials_roles_scores_and_final_runs(
    jobs: Jobs,  # noqa: F811
    study: str,
) -> None:
    data = jobs.client.get(f"/v1/jobs/{study}/charts").json()
    runs = {str(r.id): r for r in stored_study_runs(study)}
    assert len(data["runs"]) == len(runs) == 10 + 2 * 2 * 2  # trials, reruns and baselines
    for entry in data["runs"]:
        stored = runs[entry["id"]]
        assert (entry["role"], entry["trial"]) == (stored.role, stored.trial)
        assert entry["pruned_at_epoch"] == stored.pruned_at_epoch
        assert entry["selection_score"] == stored.selection_score
    # The series charts draw the final answer: the reruns and baselines, not the trials.
    final = {rid for rid, r in runs.items() if r.role in ("rerun", "baseline")}
    assert set(data["steps"]) == set(data["epochs"]) == final and len(final) == 8
    assert [(entry["label"], entry["seeds"], entry["baseline_of"]) for entry in data["labels"]] == [
        ("sgd", 2, None),
        ("sgd:one-shot", 2, "sgd"),
        ("adam", 2, None),
        ("adam:one-shot", 2, "adam"),
        ("sgd.hot", 0, None),  # every trial diverged: nothing to rerun
    ]

    block = data["study"]
    assert block["sampler"] == "quasirandom" and block["metric"] == "val_accuracy"
    assert block["higher_is_better"] and block["phase"] == "reruns"
    assert block["axes"] == {"lr": {"scale": "log", "categories": None}}
    assert block["expected_best_note"] is None
    epochs = jobs.client.get(f"/v1/jobs/{study}/metrics?granularity=epoch").json()["runs"]
    val = {str(r["run_id"]): r["series"]["val_accuracy"] for r in epochs}
    statuses = []
    for entry, spec_entry in zip(block["entries"], STUDY["optimizers"], strict=True):
        label = spec_entry.get("label") or spec_entry["name"]
        assert entry["label"] == label
        bounds = spec_entry["search"]["lr"]["log_uniform"]
        assert entry["search"] == {"lr": {"kind": "log_uniform", "bounds": bounds}}
        assert entry["budget"] == STUDY["tuning"]["trials"][label] == len(entry["trials"])
        assert [t["trial"] for t in entry["trials"]] == list(range(entry["budget"]))
        lo, hi = bounds
        for t in entry["trials"]:
            run = runs[t["run_id"]]
            assert run.role == "trial" and run.label == label
            assert (
                t["values"] == {"lr": run.hyperparameters["lr"]} and lo <= t["values"]["lr"] <= hi
            )
            expected = (
                "diverged" if run.diverged else "pruned" if run.pruned_at_epoch else "completed"
            )
            assert t["status"] == expected and t["pruned_at_epoch"] == run.pruned_at_epoch
            finite = [v for v in val[t["run_id"]] if v is not None]
            assert t["score"] == run.selection_score == (max(finite) if finite else None)
            statuses.append(t["status"])
        scored = [t for t in entry["trials"] if t["score"] is not None]
        if scored:  # the starred best is the trial the reruns carry, the highest score
            reruns = {r.trial for r in runs.values() if r.role == "rerun" and r.label == label}
            assert entry["best_final"] and reruns == {entry["best_trial"]}
            assert entry["best_trial"] == max(scored, key=lambda t: t["score"])["trial"]
        else:
            assert entry["best_trial"] is None and entry["expected_best"] is None
            continue
        completed = [t["score"] for t in entry["trials"] if t["status"] == "completed"]
        assert len(completed) == 2  # halving at epoch 2 kept half of the four
        curve = entry["expected_best"]
        assert curve == pytest.approx([brute_expected_best(completed, k) for k in (1, 2)])
        assert curve[0] == pytest.approx(sum(completed) / 2) and curve[-1] < max(completed)
    assert statuses.count("pruned") == 4 and statuses.count("diverged") == 2
    assert block["progress"] == {
        "budget": 10,
        "trials": 10,
        "done": 10,
        "completed": 4,
        "pruned": 4,
        "diverged": 2,
        "failed": 0,
        "reruns": 8,
        "reruns_done": 8,
    }
    # A plain comparison has no study block and keeps every run's series.
    lecture = jobs.client.get(f"/v1/jobs/{jobs.lecture}/charts").json()
    assert lecture["study"] is None and {r["role"] for r in lecture["runs"]} == {"run"}
    assert all(entry["baseline_of"] is None for entry in lecture["labels"])


def test_a_running_study_scores_its_trials_from_their_epochs_and_names_a_provisional_best(
    jobs: Jobs,  # noqa: F811
    study: str,
) -> None:
    loaded = load(study)
    # As it stood during the search: no reruns yet, no stored scores, one trial still training.
    trials = [r for r in loaded.runs if r.role == "trial"]
    adam = [r for r in trials if r.label == "adam"]
    running = max(adam, key=lambda r: r.selection_score or 0)  # the one that was best
    earlier = [
        replace(r, selection_score=None, status="running" if r.id == running.id else r.status)
        for r in trials
    ]
    data = chart_data(replace(loaded, status="running", runs=earlier), smoothing=0.5)
    block = data["study"]
    assert block["phase"] == "search" and data["steps"] == {} and data["epochs"] == {}
    entry = next(e for e in block["entries"] if e["label"] == "adam")
    by_trial = {t["trial"]: t for t in entry["trials"]}
    for run in adam:  # scores from the epoch series equal the ones stored at the search's end
        assert by_trial[run.trial]["score"] == pytest.approx(run.selection_score)
    assert by_trial[running.trial]["status"] == "running"
    finished = [r for r in adam if r.id != running.id]
    assert not entry["best_final"]
    assert entry["best_trial"] == max(finished, key=lambda r: r.selection_score or 0).trial
    assert entry["best_trial"] != running.trial  # a running trial is not yet a result
    assert block["progress"]["done"] == 9 and block["progress"]["reruns"] == 0


def test_grid_and_tpe_studies_have_no_expected_best_curve_and_say_why(
    jobs: Jobs,  # noqa: F811
    study: str,
) -> None:
    loaded = load(study)
    # the grid sampler takes grids: each entry's range as a two-point grid
    grids = [
        {**entry, "search": {"lr": {"grid": entry["search"]["lr"]["log_uniform"]}}}
        for entry in loaded.spec["optimizers"]
    ]
    for sampler, why in (("tpe", "earlier rounds"), ("grid", "not random")):
        spec = {**loaded.spec, "tuning": {**loaded.spec["tuning"], "sampler": sampler}}
        if sampler == "grid":
            spec["optimizers"] = grids
        block = chart_data(replace(loaded, spec=spec), smoothing=0.5)["study"]
        assert block["sampler"] == sampler and why in block["expected_best_note"]
        assert all(entry["expected_best"] is None for entry in block["entries"])
        # the tuneability plot does not depend on the sampler
        assert sum(len(e["trials"]) for e in block["entries"]) == 10


def test_study_axes_are_log_for_rates_and_categories_for_flags() -> None:
    from services.report.study_data import _axes
    from services.spec import JobSpec

    spec = JobSpec.model_validate(
        {
            **STUDY,
            "optimizers": [
                {
                    "name": "adam",
                    "lr": 1e-3,
                    "search": {
                        "lr": {"grid": [1e-4, 1e-3, 1e-2]},
                        "betas.0": {"uniform": [0.8, 0.99]},
                        "amsgrad": {"choice": [True, False]},
                    },
                },
                {"name": "sgd", "lr": 0.1, "search": {"lr": {"log_uniform": [1e-3, 1.0]}}},
            ],
            "tuning": {"trials": 4, "sampler": "random"},
        }
    )
    assert _axes(spec) == {
        "lr": {"scale": "log", "categories": None},
        "betas.0": {"scale": "linear", "categories": None},
        "amsgrad": {"scale": "category", "categories": [True, False]},
    }
