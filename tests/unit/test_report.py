"""The HTML report, its SVG charts and the series export, on jobs run in-process."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services import plots
from services.api.app import create_app
from services.db import metric_queries
from services.db.models import EpochMetric, Run, StepMetric
from services.db.session import unit_of_work
from services.export import COLUMNS, RUN_COLUMNS, export_series
from services.report import LANDSCAPES, ema, render_report
from tests.conftest import reset_process_state
from tests.support import local_client
from workers.execution import execute_job

LECTURE = {
    "name": "report test: lecture optimizers on digits",
    "dataset": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizers": [
        {"name": "gd", "lr": 0.5},
        {"name": "sgd", "lr": 0.05},
        {"name": "momentum", "lr": 0.05, "momentum": 0.9},
        {"name": "adagrad", "lr": 0.05},
        {"name": "adam", "lr": 0.001, "label": "adam.slow:1e-3"},
    ],
    "epochs": 3,
    "batch_size": 64,
    "seeds": [0, 1, 2],
    "target": {"metric": "val_accuracy", "value": 0.9},
}
ROSENBROCK = {
    "name": "report test: rosenbrock",
    "dataset": {"name": "rosenbrock", "start": [-1.5, 2.0]},
    "model": {"name": "point"},
    "optimizers": [
        {"name": "momentum", "lr": 1e-3, "momentum": 0.9},
        {"name": "adam", "lr": 0.05},
        {"name": "rmsprop", "lr": 0.01},
    ],
    "epochs": 300,
    "seeds": [0, 1],
}
LABELS = ["gd", "sgd", "momentum", "adagrad", "adam.slow:1e-3"]
HOSTILE = "</svg><script>alert('x')</script>&amp;\"<b>"


@dataclass
class Jobs:
    client: TestClient
    lecture: str
    rosenbrock: str


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    """One lecture-style and one landscape job, run once for the module (embedded default)."""
    from services.db.migrate import upgrade

    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path_factory.mktemp("report") / "home"))
        reset_process_state()
        upgrade()
        with local_client(create_app()) as client:
            ids = []
            for spec in (LECTURE, ROSENBROCK):
                response = client.post("/v1/jobs", json=spec)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
                execute_job(ids[-1])
                assert client.get(f"/v1/jobs/{ids[-1]}").json()["status"] == "succeeded"
            yield Jobs(client, *ids)
    reset_process_state()


# ---------------------------------------------------------------- helpers


VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class _Balance(HTMLParser):
    """Checks that every non-void element is closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svg_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../> inside SVG

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def assert_valid_page(page: str) -> list[str]:
    """Balanced HTML, well-formed SVG, nothing fetched from anywhere; returns the SVGs."""
    assert page.startswith("<!DOCTYPE html>")
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""\b(src|href|xlink:href)\s*=\s*["']?(?!#)""", page)
    assert "<script" not in page.lower() and "@import" not in page and "url(http" not in page
    return svgs


def count_rows(job_id: str) -> tuple[int, int, int]:
    """Runs, step rows and epoch rows stored for the job."""
    with unit_of_work() as session:
        run_ids = list(session.scalars(select(Run.id).where(Run.job_id == uuid.UUID(job_id))))
        steps = session.scalar(
            select(func.count()).select_from(StepMetric).where(StepMetric.run_id.in_(run_ids))
        )
        epochs = session.scalar(
            select(func.count()).select_from(EpochMetric).where(EpochMetric.run_id.in_(run_ids))
        )
    return len(run_ids), int(steps or 0), int(epochs or 0)


def stored_runs(job_id: str) -> dict[str, tuple[int, str, int, dict[str, Any]]]:
    """Per run ``"label/seed"``: its id, optimizer, seed and stored hyperparameters."""
    with unit_of_work() as session:
        runs = session.scalars(select(Run).where(Run.job_id == uuid.UUID(job_id))).all()
        return {
            f"{r.label}/{r.seed}": (r.id, r.optimizer, r.seed, dict(r.hyperparameters))
            for r in runs
        }


# ---------------------------------------------------------------- the report


def test_lecture_report_has_every_chart_label_and_summary_row(jobs: Jobs) -> None:
    response = jobs.client.get(f"/v1/jobs/{jobs.lecture}/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    svgs = assert_valid_page(page)

    # loss per step and per epoch, validation accuracy per epoch, steps and time to target
    titles = [ET.fromstring(svg).findtext("title") for svg in svgs]
    assert titles == [
        "Training loss per step",
        "Training loss per epoch",
        "Validation accuracy per epoch",
        "Steps to target",
        "Time to target",
    ]
    loss = svgs[0]
    assert "training loss (batch) (log)" in loss
    assert loss.count('class="series"') == len(LABELS)
    assert loss.count('class="band"') >= len(LABELS)  # three seeds: a band per label
    assert "smoothing 0.9" in page and "min-max over seeds" in page

    summary = jobs.client.get(f"/v1/jobs/{jobs.lecture}/summary").json()
    table = page[page.index('<section id="summary">') : page.index("</section>")]
    rows = re.findall(r"<tbody>(.*?)</tbody>", table, flags=re.S)[0].split("</tr>")[:-1]
    assert len(rows) == len(LABELS) == len(summary["optimizers"])
    for row, expected in zip(rows, summary["optimizers"], strict=True):
        assert f'<td class="text">{expected["label"]}</td>' in row
        assert f"<td>{expected['target_reached']}</td>" in row or expected["target_reached"] in row
    for label in LABELS:
        assert page.count(label) >= 5  # table, loss, validation, two bar charts
    reached = [r for r in summary["optimizers"] if r["steps_to_target"] is not None]
    missed = [r for r in summary["optimizers"] if r["steps_to_target"] is None]
    assert reached and missed, summary  # both kinds of bars are drawn
    assert svgs[3].count('class="bar"') == len(reached)
    assert svgs[3].count('class="not-reached"') == len(missed)

    assert '<section id="spec">' in page and "&quot;momentum&quot;: 0.9" in page
    assert "<dt>device</dt><dd>cpu</dd>" in page and "<dt>optbench</dt>" in page
    assert "landscape" not in page.split('<section id="spec">')[0].lower()


def test_report_of_unknown_job_is_a_404_problem(jobs: Jobs) -> None:
    missing = jobs.client.get(f"/v1/jobs/{uuid.uuid4()}/report")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"].startswith("no job with id")
    assert jobs.client.get("/v1/jobs/not-a-uuid/report").status_code == 422
    assert jobs.client.get(f"/v1/jobs/{jobs.lecture}/report?smoothing=1").status_code == 422


def test_a_queued_job_gets_a_partial_report(jobs: Jobs) -> None:
    queued = jobs.client.post("/v1/jobs", json={**LECTURE, "name": "not run yet"}).json()["id"]
    page = render_report(queued)
    assert_valid_page(page)
    assert "still running" in page and "no data" in page
    assert all(label in page for label in LABELS)


def test_landscape_report_draws_one_trajectory_per_run_over_the_contour(jobs: Jobs) -> None:
    page = jobs.client.get(f"/v1/jobs/{jobs.rosenbrock}/report").text
    svgs = assert_valid_page(page)
    contour = next(svg for svg in svgs if 'class="chart contour-chart"' in svg)
    runs, _, _ = count_rows(jobs.rosenbrock)
    assert runs == 6
    assert contour.count('<polyline class="trajectory"') == runs
    assert contour.count('class="start"') == contour.count('class="end"') == runs
    assert contour.count('class="minimum"') == 1  # rosenbrock's (1, 1)
    assert 'class="contour-fill"' in contour and contour.count("<path d=") >= 5  # iso-lines
    for optimizer in ("momentum", "adam", "rmsprop"):
        assert f'data-label="{optimizer}"' in contour
    # the first point of every path is the start, (-1.5, 2.0), the same pixel for all runs
    firsts = re.findall(r'class="trajectory"[^>]*points="([^ "]+)', contour)
    assert len(set(firsts)) == 1
    titles = [ET.fromstring(svg).findtext("title") for svg in svgs]
    assert "Distance to the nearest minimum per step" in titles
    assert "Loss per step" in titles and "Validation accuracy per epoch" not in titles
    assert "unsmoothed" in page


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_numpy_landscapes_equal_the_engine(name: str) -> None:
    import torch

    from workers.engine.landscapes import LANDSCAPES as ENGINE

    view = LANDSCAPES[name]()
    engine = ENGINE.get(name)()
    points = np.random.default_rng(0).uniform(-3, 3, size=(20, 2))
    ours = view.function(points[:, 0], points[:, 1])
    theirs = [float(engine(torch.tensor(p, dtype=torch.float64))) for p in points]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert view.minima == engine.minima


# ---------------------------------------------------------------- export


def test_export_round_trips_csv_json_and_parquet(jobs: Jobs, tmp_path: Path) -> None:
    for job_id in (jobs.lecture, jobs.rosenbrock):
        runs, steps, epochs = count_rows(job_id)

        written = export_series(job_id, "csv", tmp_path / "series.csv")
        with open(tmp_path / "series.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert written == len(rows) == steps + epochs
        assert list(rows[0]) == list(COLUMNS)
        assert sum(r["granularity"] == "step" for r in rows) == steps
        assert len({r["run_id"] for r in rows}) == runs
        first = rows[0]
        assert first["granularity"] == "step" and first["step"] == "1" and first["epoch"] == "1"
        assert math.isfinite(float(first["loss"])) and first["distance"] == ""

        text = io.StringIO()
        export_series(job_id, "json", text)
        document = json.loads(text.getvalue())
        assert document["job_id"] == job_id and document["spec"]["name"].startswith("report")
        assert document["summary"]["optimizers"]
        for granularity, expected in (("step", steps), ("epoch", epochs)):
            metrics = document["metrics"][granularity]
            served = jobs.client.get(
                f"/v1/jobs/{job_id}/metrics", params={"granularity": granularity}
            ).json()
            assert set(metrics) <= set(served)  # the endpoint's shape (its paging keys aside)
            assert [
                {k: r[k] for k in s if k != "series"}
                for r, s in zip(metrics["runs"], served["runs"], strict=True)
            ] == [{k: r[k] for k in r if k != "series"} for r in served["runs"]]
            # ... and each run entry says whose it is
            spec = document["spec"]
            for run in metrics["runs"]:
                assert set(RUN_COLUMNS) <= set(run)
                assert run["job_id"] == job_id and run["job_name"] == spec["name"]
                assert (run["dataset"], run["model"]) == (
                    spec["dataset"]["name"],
                    spec["model"]["name"],
                )
                stored = stored_runs(job_id)[f"{run['label']}/{run['seed']}"]
                assert (run["run_id"], run["hyperparameters"]) == (stored[0], stored[3])
            with unit_of_work() as session:
                stored = metric_queries.series(
                    session, [r["run_id"] for r in metrics["runs"]], granularity
                )
            assert {r["run_id"]: r["series"] for r in metrics["runs"]} == stored
            assert sum(len(r["series"]["step"]) for r in metrics["runs"]) == expected

        binary = io.BytesIO()
        assert export_series(job_id, "parquet", binary) == steps + epochs
        table = pq.read_table(io.BytesIO(binary.getvalue()))
        assert table.column_names == list(COLUMNS) and table.num_rows == steps + epochs
        kinds = table.column("granularity").to_pylist()
        assert kinds.count("step") == steps and kinds.count("epoch") == epochs
        assert table.column("loss").null_count == epochs  # step-only column
        metadata = table.schema.metadata
        assert metadata[b"optbench.job_id"].decode() == job_id
        assert json.loads(metadata[b"optbench.spec"])["epochs"] in (3, 300)

    # one granularity, to a binary stream
    epochs_only = io.BytesIO()
    _, _, epochs = count_rows(jobs.lecture)
    assert export_series(jobs.lecture, "csv", epochs_only, granularity="epoch") == epochs
    lines = epochs_only.getvalue().decode().splitlines()
    assert len(lines) == epochs + 1 and all(",epoch," in line for line in lines[1:])


def test_exports_of_two_jobs_concatenated_are_told_apart_and_join(
    jobs: Jobs, tmp_path: Path
) -> None:
    import pyarrow as pa

    ids = (jobs.lecture, jobs.rosenbrock)
    specs = {jobs.lecture: LECTURE, jobs.rosenbrock: ROSENBROCK}
    rows: list[dict[str, str]] = []
    tables = []
    runs: list[dict[str, Any]] = []  # the JSON exports' run entries, both jobs
    for job_id in ids:
        export_series(job_id, "csv", tmp_path / f"{job_id}.csv")
        with open(tmp_path / f"{job_id}.csv", newline="") as handle:
            rows += csv.DictReader(handle)
        binary = io.BytesIO()
        export_series(job_id, "parquet", binary)
        tables.append(pq.read_table(io.BytesIO(binary.getvalue())))
        text = io.StringIO()
        export_series(job_id, "json", text, granularity="epoch")
        runs += json.loads(text.getvalue())["metrics"]["epoch"]["runs"]
    assert tables[0].schema.equals(tables[1].schema)  # one schema whatever the optimizers

    # both jobs have a "momentum" run (and seed 0): only job_id tells them apart
    momentum = {r["job_id"] for r in rows if r["label"] == "momentum" and r["seed"] == "0"}
    assert momentum == set(ids)

    # every row, CSV and parquet, says whose it is, as stored
    table = pa.concat_tables(tables)
    assert table.num_rows == len(rows) == sum(sum(count_rows(j)[1:]) for j in ids)
    columns = list(RUN_COLUMNS)
    from_parquet = {tuple(r[c] for c in columns) for r in table.select(columns).to_pylist()}
    from_csv = {tuple(r[c] for c in columns) for r in rows}
    expected = set()
    for job_id in ids:
        spec = specs[job_id]
        for key, (run_id, optimizer, seed, hyper) in stored_runs(job_id).items():
            label = key.rsplit("/", 1)[0]
            hyper_json = json.dumps(hyper, sort_keys=True, separators=(",", ":"))
            assert json.loads(hyper_json) == hyper and " " not in hyper_json
            assert hyper["lr"] == next(
                o["lr"] for o in spec["optimizers"] if o.get("label", o["name"]) == label
            )
            expected.add(
                (
                    job_id,
                    spec["name"],
                    spec["dataset"]["name"],
                    spec["model"]["name"],
                    run_id,
                    label,
                    optimizer,
                    seed,
                    hyper_json,
                )
            )
    assert from_parquet == expected
    assert from_csv == {tuple(map(str, key)) for key in expected}
    for row in rows:  # the hyperparameters round-trip from the column
        assert (
            json.loads(row["hyperparameters"])
            == stored_runs(row["job_id"])[f"{row['label']}/{row['seed']}"][3]
        )

    # a join on job_id + label (+ seed): each epoch row meets exactly its own run's entry
    by_key = {(r["job_id"], r["label"], r["seed"]): r for r in runs}
    assert len(by_key) == len(runs) == sum(count_rows(j)[0] for j in ids)
    epochs = [r for r in rows if r["granularity"] == "epoch"]
    for row in epochs:
        entry = by_key[(row["job_id"], row["label"], int(row["seed"]))]
        assert str(entry["run_id"]) == row["run_id"]
        assert entry["hyperparameters"] == json.loads(row["hyperparameters"])
        index = entry["series"]["epoch"].index(int(row["epoch"]))
        assert float(row["val_loss"]) == entry["series"]["val_loss"][index]
    runs_table = pa.table(
        {
            "job_id": [r["job_id"] for r in runs],
            "label": [r["label"] for r in runs],
            "seed": pa.array([r["seed"] for r in runs], pa.int64()),
            "entry_run_id": pa.array([r["run_id"] for r in runs], pa.int64()),
        }
    )
    joined = table.filter(pa.compute.equal(table["granularity"], "epoch")).join(
        runs_table, keys=["job_id", "label", "seed"]
    )
    assert joined.num_rows == len(epochs)
    assert joined["run_id"].to_pylist() == joined["entry_run_id"].to_pylist()


def test_export_refuses_unknown_formats_and_jobs(jobs: Jobs) -> None:
    from services.errors import InvalidSpec, NotFound

    with pytest.raises(InvalidSpec, match="format: must be one of csv, json, parquet"):
        export_series(jobs.lecture, "xlsx", io.StringIO())
    with pytest.raises(InvalidSpec, match="granularity"):
        export_series(jobs.lecture, "csv", io.StringIO(), granularity="batch")
    with pytest.raises(InvalidSpec, match="binary"):
        export_series(jobs.lecture, "parquet", io.StringIO())
    with pytest.raises(NotFound):
        export_series(uuid.uuid4(), "csv", io.StringIO())


# ---------------------------------------------------------------- plots, without a database


def test_downsampling_keeps_a_spike() -> None:
    rng = np.random.default_rng(0)
    n = 100_000
    x = list(range(1, n + 1))
    y: list[float | None] = list(rng.uniform(0.5, 1.0, size=n))
    y[54_321] = 1e6
    y[77_777] = 1e-9
    xs, ys = plots.downsample(x, y, 1000)
    assert len(xs) <= 1000 and xs == sorted(xs)
    assert 1e6 in ys and 1e-9 in ys and xs[0] == 1 and xs[-1] == n
    bx, lo, hi = plots.downsample_band(x, y, y, 1000)
    assert len(bx) <= 1000 and max(v for v in hi if v) == 1e6 and min(v for v in lo if v) == 1e-9

    svg = plots.line_chart(
        [plots.Series("noisy", x, y, lower=y, upper=y)],
        title="spike",
        x_label="step",
        y_label="loss",
        log_y=True,
    )
    ET.fromstring(svg)
    path = re.search(r'class="series" d="([^"]+)"', svg)
    assert path is not None
    points = path.group(1).count("L") + 1
    assert points <= 1000
    # the spike is the one point at the top of the plot (the axis range is padded by 4 %)
    heights = sorted(float(v) for v in re.findall(r"[ML][\d.]+ ([\d.]+)", path.group(1)))
    assert heights[0] < 34 + 20 and heights[1] > 100  # the plot area is y = 34 ... 330


def test_every_text_is_escaped() -> None:
    charts = [
        plots.line_chart(
            [plots.Series(HOSTILE, [1, 2, 3], [3.0, 2.0, 1.0], [2.0, 1.0, 0.5], [4, 3, 2])],
            title=HOSTILE,
            x_label=HOSTILE,
            y_label=HOSTILE,
            reference=(1.5, HOSTILE),
        ),
        plots.bar_chart(
            [plots.Bar(HOSTILE, 12.0, HOSTILE), plots.Bar("b", None, HOSTILE)],
            title=HOSTILE,
            value_label=HOSTILE,
        ),
        plots.contour_chart(
            lambda x, y: x**2 + y**2,
            (-1.0, 1.0),
            (-1.0, 1.0),
            title=HOSTILE,
            trajectories=[plots.Trajectory(HOSTILE, [0.5, 0.1, 0.0], [0.5, 0.2, 0.0])],
            minima=[(0.0, 0.0)],
            resolution=(20, 20),
            shading_note=HOSTILE,
        ),
    ]
    for svg in charts:
        root = ET.fromstring(svg)  # still one well-formed <svg>: nothing broke out
        assert root.tag == "svg"
        assert "<script" not in svg and "</svg><" not in svg[:-6]
        assert "&lt;script&gt;" in svg and "&amp;amp;" in svg and "&quot;&lt;b&gt;" in svg
        assert HOSTILE in "".join(root.itertext()) or any(
            HOSTILE in v for el in root.iter() for v in el.attrib.values()
        )


def test_ticks_and_smoothing() -> None:
    assert plots.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.log_ticks(1e-4, 10)[:2] == [1e-4, 1e-3]
    assert plots.log_ticks(0.3, 2) == [0.5, 1.0, 2.0]
    assert plots.tick_text(1e-5) == "1e-5" and plots.tick_text(2500) == "2500"
    smoothed = ema([1.0, None, 3.0], 0.5)
    assert smoothed[0] == 1.0 and smoothed[1] is None and 1.0 < smoothed[2] < 3.0  # type: ignore[operator]
    assert ema([2.0, 2.0], 0.9) == [2.0, 2.0]  # debiased: a constant stays itself


def test_a_line_chart_with_nothing_to_draw_says_so() -> None:
    svg = plots.line_chart(
        [plots.Series("empty", [1, 2], [None, float("nan")])], title="t", x_label="x", y_label="y"
    )
    assert "no data" in svg
    ET.fromstring(svg)
