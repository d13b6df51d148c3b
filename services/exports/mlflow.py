"""``export_series(job_id, "mlflow", tracking_uri)``: the job into an MLflow tracking server.

``mlflow`` is the optional extra ``optbench[mlflow]`` (``mlflow-skinny`` is enough),
imported only here. The export talks to ``MlflowClient(tracking_uri)`` directly: no global
tracking URI or active run is set, so it changes nothing else in the process. Any tracking
URI MLflow takes: ``sqlite:///mlflow.db``, ``postgresql://...``, ``http://host:5000``
(MLflow 3 refuses its deprecated filesystem store unless ``MLFLOW_ALLOW_FILE_STORE=true``).

- **experiment**: one per job, named ``<job name> (<first 8 hex digits of its id>)``
  (``optbench (...)`` for a job without a name) and tagged ``optbench.job_id``. An
  experiment with that tag is reused whatever it is called now (renaming it is fine).
- **runs**: one MLflow run per optbench run, named ``<label>/seed-<seed>``, tagged
  ``optbench.job_id``, ``optbench.run_id`` and ``optbench.status`` (the run's status when
  exported), with start and end times from the run. Its MLflow status: ``FINISHED`` for a
  run that succeeded (diverged or not), ``FAILED``, ``KILLED`` (cancelled), or left
  ``RUNNING`` for a run that had not ended yet.
- **params**: ``optimizer``, ``label``, ``seed``, ``dataset``, ``model`` and every optimizer
  keyword argument, flattened (``betas.0``, ``betas.1``), as MLflow's strings.
- **metrics**: the TensorBoard export's names and values (``services.exports.data``:
  ``train/loss``, ``val/accuracy``, ``epoch/val_accuracy``, ``test/loss``, ...) at
  ``step=<global step>``, timestamped with the run's start plus its stored training
  seconds, in ``log_batch`` requests of 1000 (MLflow's limit): a run of 10 000 steps is a
  few dozen requests, not one per value.

Exporting a job again does not duplicate it: the experiment is found by its tag, and each
optbench run's MLflow run by ``optbench.run_id``. A run exported completely after it had
ended (tag ``optbench.export = complete``) is skipped; any other one found (an export cut
off midway, or a run still training then) is deleted and logged again in full, so a job
exported while running can be exported again once it is done. Returns the number of
metric values logged by this call (0 when everything was exported already).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from services.db.models import CANCELLED, FAILED, FINISHED, SUCCEEDED
from services.errors import InvalidSpec
from services.exports.data import ExportJob, ExportRun, flatten, points, start_time

JOB_TAG, RUN_TAG, STATUS_TAG, DONE_TAG = (
    "optbench.job_id",
    "optbench.run_id",
    "optbench.status",
    "optbench.export",
)
# log_batch takes at most 1000 metrics, 100 params and 100 tags per request.
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100
RUN_STATUS = {SUCCEEDED: "FINISHED", FAILED: "FAILED", CANCELLED: "KILLED"}

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri``, or a clear error if mlflow is missing."""
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("mlflow"):
            raise
        raise InvalidSpec("format mlflow needs mlflow: pip install 'optbench[mlflow]'") from None
    return MlflowClient(tracking_uri=tracking_uri)


def params(job: ExportJob, run: ExportRun) -> dict[str, str]:
    """The run's params (no torch.optim keyword is named like the first five)."""
    values = {
        "optimizer": run.optimizer,
        "label": run.label,
        "seed": run.seed,
        "dataset": job.dataset,
        "model": job.model,
        **flatten(run.hyperparameters),
    }
    return {key: str(value) for key, value in values.items()}


def experiment_name(job: ExportJob) -> str:
    return f"{job.name or 'optbench'} ({job.id[:8]})"


def _experiment(mlflow: Any, job: ExportJob) -> str:
    """The job's experiment id: found by its tag, else created."""
    from mlflow.exceptions import MlflowException

    found = mlflow.search_experiments(filter_string=f"tags.`{JOB_TAG}` = '{job.id}'")
    if found:
        return str(found[0].experiment_id)
    name = experiment_name(job)
    try:
        return str(mlflow.create_experiment(name, tags={JOB_TAG: job.id}))
    except MlflowException as error:
        raise InvalidSpec(
            f"format mlflow: an experiment named '{name}' exists but is not this job's "
            "(no optbench.job_id tag; a deleted one keeps its name): rename it, or delete "
            f"it for good, then export again ({error.message})"
        ) from None


def _exported(mlflow: Any, experiment_id: str, job: ExportJob) -> dict[str, Any]:
    """The experiment's active MLflow runs of this job, by optbench run id."""
    found: dict[str, Any] = {}
    token = None
    while True:
        page = mlflow.search_runs(
            [experiment_id],
            filter_string=f"tags.`{JOB_TAG}` = '{job.id}'",
            max_results=1000,
            page_token=token,
        )
        for mlrun in page:
            found[mlrun.data.tags.get(RUN_TAG, "")] = mlrun
        token = page.token
        if not token:
            return found


def _log_run(mlflow: Any, experiment_id: str, job: ExportJob, run: ExportRun) -> int:
    from mlflow.entities import Metric, Param

    start = start_time(job, run)
    mlrun = mlflow.create_run(
        experiment_id,
        start_time=_ms(start),
        tags={JOB_TAG: job.id, RUN_TAG: str(run.id), STATUS_TAG: run.status},
        run_name=f"{run.label}/seed-{run.seed}",
    )
    run_id = mlrun.info.run_id
    logged = [Param(k, v) for k, v in params(job, run).items()]
    for batch in _chunks(logged, PARAMS_PER_BATCH):
        mlflow.log_batch(run_id, params=batch)
    metrics = [
        Metric(name, value, _ms(start + (point.seconds or 0.0)), point.step)
        for point in points(job, run)
        for name, value in point.values.items()
    ]
    for chunk in _chunks(metrics, METRICS_PER_BATCH):
        mlflow.log_batch(run_id, metrics=chunk)
    if run.status in FINISHED:
        mlflow.set_tag(run_id, DONE_TAG, "complete")  # last: a cut-off export lacks it
        end = run.finished_at.timestamp() if run.finished_at else start
        mlflow.set_terminated(run_id, status=RUN_STATUS[run.status], end_time=_ms(end))
    return len(metrics)


def write_mlflow(job: ExportJob, tracking_uri: str) -> int:
    mlflow = client(tracking_uri)
    experiment_id = _experiment(mlflow, job)
    exported = _exported(mlflow, experiment_id, job)
    count = 0
    for run in job.runs:
        earlier = exported.get(str(run.id))
        if earlier is not None:
            if earlier.data.tags.get(DONE_TAG) == "complete":
                continue
            mlflow.delete_run(earlier.info.run_id)
        count += _log_run(mlflow, experiment_id, job, run)
    return count
