"""The TensorBoard and MLflow exports, read back value by value against what the database
stores (its own tables, read here without the export's code), and the runs' test results in
every export; each on the embedded SQLite file and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from services.db import store
from services.db.models import EpochMetric, Job, Run, StepMetric
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.export import COLUMNS, export_series
from services.spec import JobSpec
from workers.execution import execute_job

CLASSIFICATION = {
    "name": "export formats: digits",
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
    # "adam:fast": a label with a character no Windows file name may hold
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01, "label": "adam:fast"}],
    "epochs": 2,
    "batch_size": 256,
    "seeds": [0, 1],
    "eval_every_steps": 3,  # mid-epoch validation points on some step rows
}
LANDSCAPE = {
    "name": "export formats: rosenbrock",
    "dataset": {"name": "rosenbrock", "start": [-1.5, 2.0]},
    "model": {"name": "point"},
    "optimizers": [{"name": "adam", "lr": 0.05}],
    "epochs": 250,  # one step per epoch: over 2000 metric values, several log_batch calls
    "seeds": [0],
}
# The names both trackers use (services/exports/data.py), written out here on purpose.
STEP_NAMES = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "train_seconds": "train/seconds",
    "x": "train/x",
    "y": "train/y",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
}
EPOCH_NAMES = {
    f: f"epoch/{f}"
    for f in (
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "train_seconds",
        "distance",
    )
}


def run_job(spec: dict[str, Any]) -> str:
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(spec)).id)
    assert execute_job(job_id) == "succeeded"
    return job_id


@dataclass
class Stored:
    """A run as the database holds it, and the values each tracker should show of it:
    ``expected[name]`` = ``[(step, value, training seconds)]`` in step order."""

    id: int
    label: str
    optimizer: str
    seed: int
    status: str
    hyperparameters: dict[str, Any]
    test_loss: float | None
    test_accuracy: float | None
    start: float
    end: float | None
    expected: dict[str, list[tuple[int, float, float]]]


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def stored_runs(job_id: str) -> list[Stored]:
    """Every run of the job from the run, step_metric and epoch_metric tables."""
    result = []
    with unit_of_work() as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None and job.started_at is not None
        runs = session.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)).all()
        for run in runs:
            expected: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
            steps = session.scalars(
                select(StepMetric).where(StepMetric.run_id == run.id).order_by(StepMetric.step)
            ).all()
            seconds = {row.step: row.train_seconds for row in steps}
            for row in steps:
                for field, name in STEP_NAMES.items():
                    value = getattr(row, field)
                    if _finite(value):
                        expected[name].append((row.step, value, row.train_seconds))
            epochs = session.scalars(
                select(EpochMetric).where(EpochMetric.run_id == run.id).order_by(EpochMetric.epoch)
            ).all()
            for epoch in epochs:
                for field, name in EPOCH_NAMES.items():
                    value = getattr(epoch, field)
                    if _finite(value):  # at its step, on the step's clock
                        at = seconds.get(epoch.step, epoch.train_seconds)
                        expected[name].append((epoch.step, value, at))
            last = steps[-1]
            for field in ("test_loss", "test_accuracy"):
                value = getattr(run, field)
                if _finite(value):
                    expected[f"test/{field[5:]}"].append((last.step, value, last.train_seconds))
            assert run.started_at is not None
            result.append(
                Stored(
                    run.id,
                    run.label,
                    run.optimizer,
                    run.seed,
                    run.status,
                    dict(run.hyperparameters),
                    run.test_loss,
                    run.test_accuracy,
                    run.started_at.timestamp(),
                    run.finished_at.timestamp() if run.finished_at else None,
                    dict(expected),
                )
            )
    return result


def expected_params(spec: dict[str, Any], run: Stored) -> dict[str, Any]:
    params: dict[str, Any] = {
        "optimizer": run.optimizer,
        "label": run.label,
        "seed": run.seed,
        "dataset": spec["dataset"]["name"],
        "model": spec["model"]["name"],
    }
    for key, value in run.hyperparameters.items():
        if isinstance(value, list):
            params.update({f"{key}.{i}": v for i, v in enumerate(value)})
        else:
            params[key] = value
    return params


# ---------------------------------------------------------------- TensorBoard


def read_events(directory: Path) -> list[Any]:
    """The events of the one event file in ``directory``: TFRecords (length, its masked
    CRC-32C, the Event protobuf, its masked CRC-32C), checked and parsed."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    (path,) = directory.glob("events.out.tfevents.*")
    data = path.read_bytes()
    events, offset = [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[offset + 8 : offset + 12])[0] == masked_crc32c(header)
        body = data[offset + 12 : offset + 12 + length]
        (crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert crc == masked_crc32c(body)
        events.append(Event.FromString(body))
        offset += 16 + length
    return events


def scalars_of(events: list[Any]) -> dict[str, list[tuple[int, float, float]]]:
    found: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found[value.tag].append((event.step, value.simple_value, event.wall_time))
    return dict(found)


def hparams_of(events: list[Any]) -> tuple[dict[str, Any], int | None]:
    """The HParams session start's values, and the session end's status (None: no end)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    values: dict[str, Any] = {}
    status = None
    for event in events:
        for value in event.summary.value:
            if not value.tag.startswith("_hparams_/"):
                continue
            data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
            assert value.metadata.plugin_data.plugin_name == "hparams"
            if value.tag == "_hparams_/session_start_info":
                for key, held in data.session_start_info.hparams.items():
                    values[key] = getattr(held, held.WhichOneof("kind"))
            elif value.tag == "_hparams_/session_end_info":
                status = data.session_end_info.status
            else:
                pytest.fail(f"unexpected hparams summary {value.tag}")
    return values, status


def check_tensorboard_run(directory: Path, spec: dict[str, Any], run: Stored) -> int:
    """Every scalar of the run's event file against the database; returns their number."""
    from tensorboardX.proto.api_pb2 import Status

    events = read_events(directory)
    assert events[0].file_version.startswith("brain.Event")
    scalars = scalars_of(events)
    assert set(scalars) == set(run.expected)
    for name, points in run.expected.items():
        got = scalars[name]
        assert [step for step, _, _ in got] == [step for step, _, _ in points], name
        # TensorBoard keeps 32-bit floats: each value is the stored one, rounded once
        assert [np.float32(v) for _, v, _ in got] == [np.float32(v) for _, v, _ in points]
        # wall time: the run's start plus the step's training seconds
        assert [w for _, _, w in got] == pytest.approx(
            [run.start + s for _, _, s in points], abs=1e-6
        )
    hparams, status = hparams_of(events)
    wanted = expected_params(spec, run)
    assert hparams == {
        k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
        for k, v in wanted.items()
    }
    assert status == Status.Value("STATUS_SUCCESS")
    return sum(len(points) for points in scalars.values())


def test_tensorboard_export_reads_back_as_stored(database: str, tmp_path: Path) -> None:
    job_id = run_job(CLASSIFICATION)
    out = tmp_path / "tb"
    written = export_series(job_id, "tensorboard", out)

    runs = stored_runs(job_id)
    directories = {str(path.parent.relative_to(out)) for path in out.rglob("events.out.tfevents.*")}
    assert directories == {"sgd/seed-0", "sgd/seed-1", "adam_fast/seed-0", "adam_fast/seed-1"}
    total = 0
    for run in runs:
        label = run.label.replace(":", "_")
        total += check_tensorboard_run(out / label / f"seed-{run.seed}", CLASSIFICATION, run)
        # what the names promise: mid-epoch validation, the epochs, the test split
        assert {"val/loss", "epoch/val_accuracy", "test/loss", "test/accuracy"} <= set(run.expected)
    assert written == total > 0

    # a second export into the same directory would merge curves in TensorBoard: refused
    with pytest.raises(InvalidSpec, match="already holds event files"):
        export_series(job_id, "tensorboard", out)
    assert export_series(job_id, "tensorboard", tmp_path / "again", granularity="epoch") == sum(
        len(p)
        for run in runs
        for name, p in run.expected.items()
        if not name.startswith(("train/", "val/"))
    )


def test_tensorboard_export_of_a_landscape(database: str, tmp_path: Path) -> None:
    spec = {**LANDSCAPE, "epochs": 20}
    job_id = run_job(spec)
    written = export_series(job_id, "tensorboard", tmp_path)
    (run,) = stored_runs(job_id)
    assert {"train/x", "train/y", "epoch/distance"} <= set(run.expected)
    assert not any(name.startswith("test/") for name in run.expected)  # no test split
    assert written == check_tensorboard_run(tmp_path / "adam" / "seed-0", spec, run)


def test_tensorboard_export_does_not_load_torch(embedded_home: Path, tmp_path: Path) -> None:
    """tensorboardX imports torch when it is installed; the export hides it (an API or CLI
    process has no use for torch). In a fresh interpreter: this one has torch loaded."""
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(CLASSIFICATION)).id)
    script = (
        "import sys\n"
        "from services.export import export_series\n"
        f"export_series({job_id!r}, 'tensorboard', {str(tmp_path / 'tb')!r})\n"
        "assert 'tensorboardX.writer' in sys.modules\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"  # and torch still imports afterwards
        "print(torch.tensor([1.0]).sum().item())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "OPTBENCH_HOME": str(embedded_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1.0"]
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 4  # runs not trained


# ---------------------------------------------------------------- MLflow


def mlflow_runs(client: Any, experiment_id: str) -> dict[str, Any]:
    return {r.data.tags["optbench.run_id"]: r for r in client.search_runs([experiment_id])}


def check_mlflow_run(client: Any, mlrun: Any, spec: dict[str, Any], run: Stored) -> int:
    """Every metric of the MLflow run against the database; returns their number."""
    assert mlrun.info.run_name == f"{run.label}/seed-{run.seed}"
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.start_time == round(run.start * 1000)
    assert run.end is not None and mlrun.info.end_time == round(run.end * 1000)
    assert {k: v for k, v in mlrun.data.tags.items() if k.startswith("optbench.")} == {
        "optbench.job_id": mlrun.data.tags["optbench.job_id"],
        "optbench.run_id": str(run.id),
        "optbench.status": "succeeded",
        "optbench.export": "complete",
    }
    assert mlrun.data.params == {k: str(v) for k, v in expected_params(spec, run).items()}
    assert set(mlrun.data.metrics) == set(run.expected)
    for name, points in run.expected.items():
        history = sorted(client.get_metric_history(mlrun.info.run_id, name), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(s, v) for s, v, _ in points], name
        assert [m.timestamp for m in history] == [round((run.start + s) * 1000) for *_, s in points]
    return sum(len(points) for points in run.expected.values())


def test_mlflow_export_reads_back_and_is_not_duplicated(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    job_id = run_job(CLASSIFICATION)
    landscape = run_job(LANDSCAPE)
    batches: list[tuple[int, int]] = []  # (metrics, params) of each log_batch request
    log_batch = MlflowClient.log_batch

    def counted(self: Any, run_id: str, metrics: Any = (), params: Any = (), **kw: Any) -> Any:
        batches.append((len(metrics), len(params)))
        return log_batch(self, run_id, metrics=metrics, params=params, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    written = {j: export_series(j, "mlflow", uri) for j in (job_id, landscape)}

    client = MlflowClient(uri)
    for job, spec in ((job_id, CLASSIFICATION), (landscape, LANDSCAPE)):
        (experiment,) = client.search_experiments(filter_string=f"tags.`optbench.job_id` = '{job}'")
        assert experiment.name == f"{spec['name']} ({job[:8]})"
        runs = stored_runs(job)
        found = mlflow_runs(client, experiment.experiment_id)
        assert set(found) == {str(run.id) for run in runs}
        assert written[job] == sum(
            check_mlflow_run(client, found[str(run.id)], spec, run) for run in runs
        )
    # in requests of at most 1000 metrics: the landscape run's 2000+ values took several
    (run,) = stored_runs(landscape)
    values = sum(len(p) for p in run.expected.values())
    assert values > 2000 and all(m <= 1000 and p <= 100 for m, p in batches)
    assert [m for m, _ in batches].count(1000) >= values // 1000
    # one request for a run's params, then one per 1000 metric values
    assert len(batches) == sum(
        math.ceil(sum(len(p) for p in r.expected.values()) / 1000) + 1
        for j in (job_id, landscape)
        for r in stored_runs(j)
    )

    # exported again: the same experiment and runs, nothing logged twice
    experiment_id = client.get_experiment_by_name(f"{CLASSIFICATION['name']} ({job_id[:8]})")
    assert export_series(job_id, "mlflow", uri) == 0
    found = mlflow_runs(client, experiment_id.experiment_id)
    assert len(client.search_experiments()) == 3  # Default and the two jobs'
    runs = stored_runs(job_id)
    for run in runs:
        check_mlflow_run(client, found[str(run.id)], CLASSIFICATION, run)

    # an export cut off before its end (no "complete" tag) is logged again, in full, once
    cut = found[str(runs[0].id)]
    client.delete_tag(cut.info.run_id, "optbench.export")
    assert export_series(job_id, "mlflow", uri) == sum(len(p) for p in runs[0].expected.values())
    again = mlflow_runs(client, experiment_id.experiment_id)
    assert len(again) == len(runs) and again[str(runs[0].id)].info.run_id != cut.info.run_id
    assert client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"
    for run in runs:
        check_mlflow_run(client, again[str(run.id)], CLASSIFICATION, run)


def test_mlflow_refuses_a_name_taken_by_another_experiment(
    embedded_home: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(CLASSIFICATION)).id)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment(f"{CLASSIFICATION['name']} ({job_id[:8]})")
    with pytest.raises(InvalidSpec, match="exists but is not this job's"):
        export_series(job_id, "mlflow", uri)


def test_missing_tracker_packages_name_the_extra(
    embedded_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(CLASSIFICATION)).id)
    for module in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, module, None)  # `import mlflow` fails
    with pytest.raises(InvalidSpec, match=r"pip install 'optbench\[mlflow\]'"):
        export_series(job_id, "mlflow", f"sqlite:///{tmp_path}/mlflow.db")
    for module in ("tensorboardX", "tensorboardX.writer"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InvalidSpec, match=r"pip install 'optbench\[tensorboard\]'"):
        export_series(job_id, "tensorboard", tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_tracker_destinations_must_be_what_the_format_writes_to(embedded_home: Path) -> None:
    with unit_of_work() as session:
        job_id = str(store.create_job(session, JobSpec.model_validate(CLASSIFICATION)).id)
    with pytest.raises(InvalidSpec, match=r"tracking URI such as sqlite:///mlflow\.db"):
        export_series(job_id, "mlflow", io.StringIO())
    with pytest.raises(InvalidSpec, match="must name a directory"):
        export_series(job_id, "tensorboard", io.BytesIO())
    (embedded_home / "notes.txt").write_text("not a directory")
    with pytest.raises(InvalidSpec, match="is a file"):
        export_series(job_id, "tensorboard", embedded_home / "notes.txt")
    with pytest.raises(
        InvalidSpec, match="format: must be one of csv, json, parquet, tensorboard, mlflow"
    ):
        export_series(job_id, "wandb", "x")


# ---------------------------------------------------------------- test results in the tables


def test_every_table_row_carries_its_run_s_test_results(database: str, tmp_path: Path) -> None:
    job_id = run_job(CLASSIFICATION)
    runs = {run.id: run for run in stored_runs(job_id)}
    assert all(_finite(r.test_loss) and 0 <= r.test_accuracy <= 1 for r in runs.values())  # type: ignore[operator]
    assert len({r.test_loss for r in runs.values()}) == len(runs)  # each row must be its own

    export_series(job_id, "csv", tmp_path / "series.csv")
    with open(tmp_path / "series.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    assert COLUMNS.index("test_loss") == COLUMNS.index("hyperparameters") + 1
    for row in rows:
        run = runs[int(row["run_id"])]
        assert float(row["test_loss"]) == run.test_loss
        assert float(row["test_accuracy"]) == run.test_accuracy

    binary = io.BytesIO()
    export_series(job_id, "parquet", binary)
    table = pq.read_table(io.BytesIO(binary.getvalue()))
    for row in table.select(["run_id", "test_loss", "test_accuracy"]).to_pylist():
        run = runs[row["run_id"]]
        assert (row["test_loss"], row["test_accuracy"]) == (run.test_loss, run.test_accuracy)

    text = io.StringIO()
    export_series(job_id, "json", text)
    document = json.loads(text.getvalue())
    for granularity in ("step", "epoch"):
        entries = document["metrics"][granularity]["runs"]
        assert len(entries) == len(runs)
        for entry in entries:
            run = runs[entry["run_id"]]
            assert (entry["test_loss"], entry["test_accuracy"]) == (
                run.test_loss,
                run.test_accuracy,
            )
    # ... and the summary inside it has their means per label
    for row in document["summary"]["optimizers"]:
        mine = [r for r in runs.values() if r.label == row["label"]]
        assert row["test_loss"] == pytest.approx(sum(r.test_loss for r in mine) / len(mine))  # type: ignore[misc]


def test_a_landscape_s_rows_have_no_test_results(database: str, tmp_path: Path) -> None:
    job_id = run_job({**LANDSCAPE, "epochs": 5})
    export_series(job_id, "csv", tmp_path / "series.csv")
    with open(tmp_path / "series.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and all(r["test_loss"] == r["test_accuracy"] == "" for r in rows)
