"""Run one stored job: load it, train it through the engine, store metrics and outcome.

Shared by the Celery tasks (workers/tasks.py) and ``optbench run`` (in-process), so both
behave the same. Status moves ``queued → running → succeeded | failed``; a failure stores a
readable error on the job and its unfinished runs.

Parts (workers/parts.py). The task that picks a job up (``execute_job``) plans it: it loads
the job's data once, splits its runs into parts and chooses threads per part, marks the job
``running``, sends parts 2..P to the queue (``send_part``; JSON arguments: job id, run ids,
threads) and trains part 1 itself with the Experiment it already loaded. Idle worker
processes train the other parts (``execute_part``); with one worker process they simply run
one after another. ``optbench run`` (no ``send_part``) trains the whole job as one part.

- Each run is finished by its part (the SQL sink's ``on_run_end``).
- The part that finishes the last open run finalises the job (summary, ``succeeded``)
  exactly once: the check and the write happen under a row lock on the job
  (``store.lock_job``), so of two parts ending at the same moment the second sees the job
  already finalised.
- A part that fails marks its unfinished runs failed and the job failed with its error.
  Parts already training finish their runs (they stay stored); the job stays failed. A part
  that starts after the job failed marks its runs as never started and trains nothing.
- A redelivered part is idempotent: it trains only its runs that have not finished (metric
  writes ignore rows already stored) and then tries to finalise. A redelivered planning task
  finds the job ``running``: it trains part 1 again (finished runs skipped) and sends again
  only the parts none of whose runs has started (a duplicate part finds its runs done).

Around the training: workers/adapter.py turns the stored job into the engine's
``JobConfig`` (its spec validated once per part); workers/leases.py decides which of a
part's runs it trains (not those a live worker holds; a run started too often gives up),
stamps them while it trains and hands them back when the worker stops; workers/timelimits.py
fails the job once it or one of its parts has run too long.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

import torch
from sqlalchemy.orm import Session

from services.db import checkpoints, store
from services.db.models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, Job
from services.db.session import unit_of_work
from services.settings import get_settings
from services.study import phases
from services.summary import job_summary
from services.telemetry import JOB_DURATION_SECONDS, JOBS_FINISHED, QUEUE_WAIT_SECONDS
from workers import gpus
from workers.adapter import LoadedJob, load_job, pick_device
from workers.cancellation import CancellationCheck, JobCancelled
from workers.engine import Experiment, Hooks
from workers.engine.checkpoint import RunState
from workers.engine.hooks import CompositeHooks
from workers.leases import GaveUp, Heartbeat, claim, release
from workers.parts import plan_parts
from workers.shutdown import ShutdownCheck, WorkerStopping
from workers.sinks import checkpoints as checkpoint_store
from workers.sinks.checkpoints import CheckpointSink
from workers.sinks.prometheus import PrometheusSink
from workers.sinks.sql import SqlSink
from workers.timelimits import Deadlines, TimeLimitCheck, TimeLimitExceeded
from workers.timings import DATA_READY, PICKED_UP, PartTimer
from workers.timings import merge as merge_timings
from workers.timings import now as timestamp

log = logging.getLogger(__name__)

# Sends one part to the queue: (job id, run ids, threads, part number, number of parts).
SendPart = Callable[[str, list[int], int, int, int], None]


def execute_job(
    job_id: uuid.UUID | str,
    *,
    send_part: SendPart | None = None,
    extra_hooks: tuple[Hooks, ...] = (),
) -> str:
    """Plan the job, send parts 2..P through ``send_part`` and train part 1 here; returns the
    job's status after part 1 (``running`` while other parts train). Without ``send_part``
    the whole job is one part, trained here. Safe to call twice (idempotent)."""
    began = time.monotonic()  # part 1's wall time counts from here, loading included
    picked_up = timestamp()
    settings = get_settings()
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        if job.status in FINISHED:
            log.info("job %s is already %s; nothing to do", job.id, job.status)
            return job.status
        job_key, created_at = job.id, job.created_at
    try:
        device = pick_device(settings.device)
        loaded = load_job(job_key, device, settings)
        experiment = loaded.experiment
        # On CUDA, one part per GPU of this worker (`optbench worker --gpus`).
        parts_setting, gpu_reason = gpus.parts_setting(settings.job_parts, device)
        plan = plan_parts(
            experiment,
            parts_setting,
            settings.torch_threads,
            # A pruned study trains as one part: its rule ranks the trials that train
            # together, so the trials of one entry must not be spread over workers.
            max_parts=None if send_part is not None and not experiment.config.pruning else 1,
        )
        data_ready = timestamp()
        with unit_of_work() as session:
            job = store.lock_job(session, job_key)
            status, first = job.status, job.status == QUEUED
            if first:
                totals = {r.key: experiment.total_steps(r) for r in experiment.config.runs}
                store.start_job(session, job, totals, device)
                job.timings = {PICKED_UP: picked_up, DATA_READY: data_ready}
            started = {run.id for run in job.runs if run.status != QUEUED}
        if status in FINISHED:  # failed by a part of an earlier delivery meanwhile
            return status
        if first:
            QUEUE_WAIT_SECONDS.observe(_seconds_since(created_at))
    except Exception as error:  # the job fails; the worker goes on with the next one
        log.exception("job %s failed", job_key)
        with unit_of_work() as session:
            store.finish_job(session, job_key, error=_describe(error))
            _observe_end(store.get_job(session, job_key, with_runs=False))
        return FAILED
    count = len(plan.parts)
    log.info(
        "job %s: %d part%s x %d thread%s (%s)",
        job_key,
        count,
        "" if count == 1 else "s",
        plan.threads,
        "" if plan.threads == 1 else "s",
        gpu_reason or plan.reason,
    )
    for index, keys in enumerate(plan.parts[1:], start=2):
        if send_part is not None and (first or not started & set(keys)):
            send_part(str(job_key), list(keys), plan.threads, index, count)
    return execute_part(
        job_key,
        plan.parts[0],
        plan.threads,
        part=1,
        parts=count,
        loaded=loaded,
        extra_hooks=extra_hooks,
        send_part=send_part,
        began=began,
    )


def execute_part(
    job_id: uuid.UUID | str,
    run_ids: Collection[int],
    threads: int,
    *,
    part: int = 1,
    parts: int = 1,
    loaded: LoadedJob | None = None,
    extra_hooks: tuple[Hooks, ...] = (),
    send_part: SendPart | None = None,
    began: float | None = None,
) -> str:
    """Train the part's runs that have not finished with ``threads`` torch threads, then
    finalise the job if no run of it is left open; returns the job's status afterwards.
    A worker shutting down stops the part after a checkpoint and sends its runs back to the
    queue through ``send_part`` (workers/shutdown.py). ``loaded``: the job as the planning
    task already loaded it (part 1), else loaded here once the runs are claimed. ``began``:
    when the part's task started (``time.monotonic()``; now if not given), for its time
    limit (workers/timelimits.py)."""
    began = time.monotonic() if began is None else began
    settings = get_settings()
    wanted = {int(run_id) for run_id in run_ids}
    with unit_of_work() as session:
        job = store.lock_job(session, job_id)
        job_key, device = job.id, job.device
        if job.status in FINISHED:
            if job.status == FAILED:
                store.fail_runs(session, job, wanted, job.error or "the job failed")
            log.info("job %s is already %s; part %d/%d skipped", job_key, job.status, part, parts)
            return job.status
        leases = claim(session, job, wanted, settings)
        if leases.todo and device:  # where they train (the job's device, set when it
            # started): this process's own GPU on a worker with several (workers/gpus.py)
            store.set_run_device(session, leases.todo, gpus.device_label(device))
        # Never started by any part: no rows, no checkpoint, nothing to supersede.
        fresh = {run.id for run in job.runs if run.id in leases.todo and run.started_at is None}
        job_elapsed = _job_elapsed(session, job)
    deadlines = Deadlines(
        f"job {job_key}",
        f"part {part}/{parts}" if parts else "a part sent again",
        began,
        settings.max_part_seconds,
        time.monotonic() - job_elapsed,
        settings.max_job_seconds,
    )
    todo = leases.todo
    timer = PartTimer()
    timings: dict[str, object] | None = None
    trained = False  # the part's training returned: its end goes with the finalising
    if leases.held:
        log.info("job %s: runs %s are trained by a live worker; not here", job_key, leases.held)
    if leases.given_up:
        given_up = [run_id for run_id, _ in leases.given_up]
        return _fail(job_key, given_up, GaveUp(leases.given_up[0][1]))
    if todo:
        try:
            deadlines.check()  # a part that waited past its job's limit trains nothing
        except TimeLimitExceeded as error:
            log.warning("%s", error)
            return _fail(job_key, todo, error)
        log.info(
            "job %s part %d/%d: runs %s, %d thread%s, pid %d",
            job_key,
            part,
            parts,
            todo,
            threads,
            "" if threads == 1 else "s",
            os.getpid(),
        )
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            # claim stamped the runs a moment ago: no second stamp before the first step
            with Heartbeat(todo, settings.heartbeat_seconds, stamped=True):
                if loaded is None:
                    loaded = load_job(job_key, pick_device(device or settings.device), settings)
                resume = _resume(loaded.experiment, todo, fresh)
                _train(job_key, loaded, todo, (timer, *extra_hooks), resume, deadlines)
            timings = timer.timings(rows_committed=timestamp())  # the sink has closed
            trained = True
        except JobCancelled:
            log.info("job %s part %d/%d stopped: the job was cancelled", job_key, part, parts)
            return CANCELLED
        except WorkerStopping:
            release(job_key, todo)
            log.info(
                "job %s part %d/%d: this worker stops; runs %s sent back",
                job_key,
                part,
                parts,
                todo,
            )
            if send_part is not None:
                send_part(str(job_key), todo, threads, part, parts)
            return RUNNING
        except TimeLimitExceeded as error:
            log.warning("%s; its runs fail", error)
            return _fail(job_key, todo, error)
        except Exception as error:
            log.exception("job %s part %d/%d failed", job_key, part, parts)
            return _fail(job_key, todo, error)
        finally:
            torch.set_num_threads(previous)
            if not trained:
                _part_ended(job_key, todo)
        log.info("job %s part %d/%d done, pid %d", job_key, part, parts, os.getpid())
    return finalise_job(job_key, send_part=send_part, threads=threads, timings=timings, ended=todo)


def _part_ended(job_key: uuid.UUID, run_ids: list[int]) -> None:
    """After a part that did not train to its end (one that did: in ``finalise_job``'s
    transaction, the same statements): the checkpoints of its runs that finished go (a
    stopping worker's unfinished runs keep theirs, to resume from), and its cancelled runs
    are held by no worker any more, so that their job can be deleted at once. Best effort:
    left behind, both go with the job when it is deleted."""
    try:
        with unit_of_work() as session:
            checkpoints.discard_finished(session, run_ids)
            store.release_cancelled(session, run_ids)
    except Exception as error:
        log.warning(
            "job %s: the checkpoints of runs %s were not removed (%s)",
            job_key,
            run_ids,
            type(error).__name__,
        )


def _resume(
    experiment: Experiment, run_ids: list[int], fresh: Collection[int] = ()
) -> dict[int, RunState]:
    """The checkpoints the runs go on from, after superseding what each stored after its own
    (all of it for a run that starts again): services/db/checkpoints.py. Runs in ``fresh``
    never started, so they have nothing stored: no statement for them (five per run, a
    tenth of a second for the lecture's eight runs)."""
    started = [run_id for run_id in run_ids if run_id not in fresh]
    if not started:
        return {}
    with unit_of_work() as session:
        usable = experiment.resumable(checkpoint_store.load(session, started), run_ids)
        for run_id in started:
            state = usable.get(run_id)
            deleted = checkpoints.supersede(
                session, run_id, state.step if state else 0, state.epochs if state else 0
            )
            if state is not None or deleted:
                log.info(
                    "run %d goes on from step %d (%d step rows stored after it superseded)",
                    run_id,
                    state.step if state else 0,
                    deleted,
                )
    return usable


def finalise_job(
    job_id: uuid.UUID,
    *,
    send_part: SendPart | None = None,
    threads: int = 1,
    timings: Mapping[str, object] | None = None,
    ended: Collection[int] = (),
) -> str:
    """If every run of the running job has finished: a study's next phase, or the job's end.

    Under the job's row lock, so it happens once however many parts call it at once. A study
    (services/study/phases.py) may answer with new runs (the next round of trials, or the
    reruns of the best settings): they are sent to the queue as one part (they train as one
    fused group), or trained here when there is no queue (``optbench run``). Otherwise the
    summary is stored and the job marked succeeded. Returns the job's status afterwards
    (``running`` while runs are open). ``timings``: the calling part's (workers/timings.py),
    merged into the job's in the same transaction. ``ended``: the runs of a part whose
    training returned, whose end (``_part_ended``'s statements) is written in it too, one
    transaction fewer."""
    with unit_of_work() as session:
        job = store.lock_job(session, job_id)
        if ended:
            checkpoints.discard_finished(session, list(ended))
            store.release_cancelled(session, ended)
        if timings and job.status == RUNNING:
            job.timings = merge_timings(job.timings, timings)
        if job.status != RUNNING or store.open_runs(job):
            return job.status
        new = phases.advance(session, job)
        if not new:
            store.finish_job(session, job.id, summary=job_summary(session, job))
            _observe_end(job)
            return job.status
        for run in new:  # same optimizer, epochs and batches as its trials: the same steps
            run.total_steps = run.total_steps or next(
                (r.total_steps for r in job.runs if r.optimizer == run.optimizer and r.total_steps),
                None,
            )
        session.flush()
        new_ids = [run.id for run in new]
        roles = sorted({run.role for run in new})
    log.info(
        "job %s: the study goes on with %d new runs (%s)", job_id, len(new_ids), ", ".join(roles)
    )
    if send_part is not None:
        send_part(str(job_id), new_ids, threads, 1, 1)
        return RUNNING
    return execute_part(job_id, new_ids, threads)


def _train(
    job_key: uuid.UUID,
    loaded: LoadedJob,
    keys: list[int],
    extra: tuple[Hooks, ...],
    resume: dict[int, RunState],
    deadlines: Deadlines,
) -> None:
    config, target = loaded.experiment.config, loaded.target
    metrics = PrometheusSink(
        config.dataset.name, config.model.name, config.device, target.column, target.reached
    )
    sink = SqlSink()
    try:
        # The check after the sink: a flush's rows are stored before a cancellation stops it.
        check = CancellationCheck(job_key)
        # After the checkpoint sink: a stopping worker stops once the checkpoint is stored.
        stopping = ShutdownCheck()
        # After the cancellation check: a cancelled job ends cancelled, not over its limit.
        limits = TimeLimitCheck(deadlines)
        hooks = CompositeHooks(sink, CheckpointSink(sink), stopping, metrics, check, limits, *extra)
        loaded.experiment.run_all(hooks, keys=keys, resume=resume)
    finally:
        close = getattr(sink, "close", None)  # a sink with a writer thread stores the rest
        if close is not None:
            close()


def _job_elapsed(session: Session, job: Job) -> float:
    """Seconds since the job started, by the database's clock (0 before it has)."""
    if job.started_at is None:
        return 0.0
    return max((store.database_now(session) - job.started_at).total_seconds(), 0.0)


def _fail(job_key: uuid.UUID, run_ids: Collection[int], error: Exception) -> str:
    message = _describe(error)
    with unit_of_work() as session:
        job = store.lock_job(session, job_key)
        store.fail_runs(session, job, run_ids, message)
        if store.fail_job(session, job, message):
            _observe_end(job)
    return FAILED


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _observe_end(job: Job) -> None:
    JOBS_FINISHED.labels(job.status).inc()
    if job.started_at is not None:
        JOB_DURATION_SECONDS.labels(job.status).observe(_seconds_since(job.started_at))


def _seconds_since(moment: datetime) -> float:
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)
