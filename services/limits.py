"""What one job may ask for, checked when it is submitted, each limit a setting:

| limit | setting | answer |
|---|---|---|
| optimizer entries x seeds | ``OPTBENCH_MAX_RUNS_PER_JOB`` (256) | 422 |
| epochs x steps per epoch of a run | ``OPTBENCH_MAX_STEPS_PER_RUN`` (10,000,000) | 422 |
| parameters of the model | ``OPTBENCH_MAX_MODEL_PARAMETERS`` (10,000,000) | 422 |
| runs x steps x samples x FLOPs per sample | ``OPTBENCH_MAX_JOB_FLOPS`` (2e15) | 422 |
| jobs queued or running per owner | ``OPTBENCH_MAX_JOBS_IN_FLIGHT`` (8) | 429, Retry-After |

Sizes and compute are estimated without torch (services/sizes.py, services/compute.py).
The compute limit's default is about a day of the 2-core reference VM, which trains these
models at 0.5-7 GFLOP/s per core (README, "Limits"); a GPU cluster raises it. Wall time is
limited in the workers, per job and per part (workers/timelimits.py).

Each refusal is problem+json naming the field, the setting, the maximum and what was asked,
and what to change. (Request bodies and uploads are limited before they are parsed:
services/api/security.py, routes/datasets.py.)
"""

from __future__ import annotations

from services.compute import ComputeEstimate, estimate
from services.db.models import Dataset
from services.errors import LimitExceeded, TooManyRequests
from services.settings import Settings
from services.sizes import data_shape, model_parameters, steps_per_run
from services.spec import JobSpec

RETRY_AFTER_SECONDS = 30  # a small job takes about this long on one CPU worker


def check_spec(spec: JobSpec, settings: Settings, upload: Dataset | None = None) -> None:
    """Raise LimitExceeded for the first limit the spec goes over."""
    runs = len(spec.optimizers) * len(spec.seeds)
    if runs > settings.max_runs_per_job:
        raise LimitExceeded(
            "seeds",
            f"{len(spec.optimizers)} optimizer entries x {len(spec.seeds)} seeds = {runs} runs; "
            f"at most {settings.max_runs_per_job} runs per job (OPTBENCH_MAX_RUNS_PER_JOB): "
            "use fewer seeds or optimizer entries, or split the comparison into several jobs",
            setting="OPTBENCH_MAX_RUNS_PER_JOB",
            maximum=settings.max_runs_per_job,
            requested=runs,
        )
    shape = data_shape(spec, upload)
    steps = steps_per_run(spec, shape)
    if steps > settings.max_steps_per_run:
        per_epoch = steps // spec.epochs
        where = (
            f" (batch_size {spec.batch_size} over about {shape.n_train:,} training samples)"
            if shape is not None
            else ""
        )
        raise LimitExceeded(
            "epochs",
            f"{spec.epochs:,} epochs x {per_epoch:,} steps per epoch{where} = {steps:,} steps "
            f"per run; at most {settings.max_steps_per_run:,} (OPTBENCH_MAX_STEPS_PER_RUN): "
            "use fewer epochs, a larger batch_size or fewer samples",
            setting="OPTBENCH_MAX_STEPS_PER_RUN",
            maximum=settings.max_steps_per_run,
            requested=steps,
        )
    parameters = model_parameters(spec, shape)
    if parameters > settings.max_model_parameters:
        inputs = "x".join(map(str, shape.input_shape)) if shape else "2"
        raise LimitExceeded(
            "model",
            f"the {spec.model.name} model has {parameters:,} parameters on {inputs} inputs; at "
            f"most {settings.max_model_parameters:,} (OPTBENCH_MAX_MODEL_PARAMETERS): use "
            "fewer or narrower layers (hidden, width, blocks)",
            setting="OPTBENCH_MAX_MODEL_PARAMETERS",
            maximum=settings.max_model_parameters,
            requested=parameters,
        )
    compute = estimate(spec, shape)
    if compute.total > settings.max_job_flops:
        raise LimitExceeded(
            "epochs",
            f"compute estimate {_describe(compute)} for the {spec.model.name} model; at most "
            f"{settings.max_job_flops:.3g} FLOP per job (OPTBENCH_MAX_JOB_FLOPS): use fewer "
            "runs (seeds, optimizer entries), epochs or samples, a larger batch_size or a "
            "smaller model",
            setting="OPTBENCH_MAX_JOB_FLOPS",
            maximum=int(settings.max_job_flops),
            requested=compute.total,
        )


def _describe(compute: ComputeEstimate) -> str:
    samples = (
        f"{compute.samples:,} samples per step x {compute.flops_per_sample:,} FLOP per sample "
        "(forward and backward)"
    )
    if compute.floored:
        samples = (
            f"{compute.per_step:.3g} FLOP per step (a step's fixed cost, more than its {samples})"
        )
    return f"{compute.runs:,} runs x {compute.steps:,} steps x {samples} = {compute.total:.3g} FLOP"


def check_in_flight(owner: str, in_flight: int, settings: Settings) -> None:
    """Raise TooManyRequests (429, Retry-After) when ``owner`` has as many jobs queued or
    running as allowed."""
    if in_flight >= settings.max_jobs_in_flight:
        raise TooManyRequests(
            f"{in_flight} jobs of owner '{owner}' are queued or running; at most "
            f"{settings.max_jobs_in_flight} at a time (OPTBENCH_MAX_JOBS_IN_FLIGHT): wait "
            f"until one has finished and submit again (retry after {RETRY_AFTER_SECONDS} s)",
            retry_after=RETRY_AFTER_SECONDS,
            limit={
                "setting": "OPTBENCH_MAX_JOBS_IN_FLIGHT",
                "maximum": settings.max_jobs_in_flight,
                "requested": in_flight + 1,
            },
        )
