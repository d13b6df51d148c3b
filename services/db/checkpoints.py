"""Run checkpoints in the database (``run_checkpoint``), and superseding what a run stored
after its checkpoint.

A checkpoint lives while its run may still resume: it goes when the run ends (with the
run's success, ``store.finish_run``; for runs a part leaves failed or cancelled, when the
part ends, ``discard_finished``), and with its job when the job is deleted.

One row per run, its latest checkpoint: where every worker can reach it (a worker that takes
over a run may run on another machine), written and read in the same short transactions as
everything else. The state is bytes to this module (``torch.save`` of plain containers of
tensors and numbers, read back with ``weights_only=True`` by workers/sinks/checkpoints.py: no
pickled code runs from the database, and the API's processes never import torch). Sizes: the
model's parameters and buffers plus the optimizer's state (Adam: twice the parameters), e.g.
about 10 KB per digits run of the lecture's MLP and 2.4 MB for a 200,000-parameter MLP.

Superseding: a run that goes on from a checkpoint at step ``s`` (or starts again: ``s`` = 0)
first deletes the step rows after ``s``, the epoch rows after the checkpoint's epochs, and
the step-rollup blocks after ``s`` (the block holding ``s`` is aggregated again from the rows
that stay), and sets ``steps_done`` to ``s``: the rows a lost worker stored after its last
checkpoint are then written again by the resumed run, so every step is stored exactly once
and the series equals an uninterrupted run's.
"""

from __future__ import annotations

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from services.db.metric_rollup import rollup_insert
from services.db.models import (
    FINISHED,
    ROLLUP_BLOCK,
    EpochMetric,
    Run,
    RunCheckpoint,
    StepMetric,
    StepRollup,
    utcnow,
)


def save(session: Session, run_id: int, step: int, epochs: int, layout: str, state: bytes) -> None:
    """Replace the run's checkpoint (``state``: serialised by workers/sinks/checkpoints.py)."""
    row = session.get(RunCheckpoint, run_id)
    if row is None:
        row = RunCheckpoint(run_id=run_id)
        session.add(row)
    row.step, row.epoch, row.layout = step, epochs, layout
    row.state, row.saved_at = state, utcnow()


def discard_finished(session: Session, run_ids: list[int]) -> int:
    """Delete the checkpoints of the runs among ``run_ids`` that have finished (succeeded,
    failed or cancelled: none is ever resumed); returns how many went. A succeeded run's
    checkpoint already went with its end (``store.finish_run``); this is for the runs a part
    leaves failed or cancelled (workers/execution.py, when the part ends)."""
    finished = select(Run.id).where(Run.id.in_(run_ids), Run.status.in_(FINISHED))
    result = session.execute(
        delete(RunCheckpoint)
        .where(RunCheckpoint.run_id.in_(finished.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def load(session: Session, run_ids: list[int]) -> list[RunCheckpoint]:
    return list(session.scalars(select(RunCheckpoint).where(RunCheckpoint.run_id.in_(run_ids))))


def supersede(session: Session, run_id: int, step: int, epochs: int) -> int:
    """Delete what the run stored after ``step`` (its steps) and ``epochs`` (its epochs), and
    its checkpoint when it starts again (``step`` 0); returns the step rows deleted."""
    deleted = session.execute(
        delete(StepMetric).where(StepMetric.run_id == run_id, StepMetric.step > step)
    )
    session.execute(
        delete(EpochMetric).where(EpochMetric.run_id == run_id, EpochMetric.epoch > epochs)
    )
    if step == 0:
        session.execute(delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id))
    _rollup_through(session, run_id, step)
    session.execute(update(Run).where(Run.id == run_id).values(steps_done=step))
    return int(getattr(deleted, "rowcount", 0) or 0)


def _rollup_through(session: Session, run_id: int, step: int) -> None:
    """The rollup of the rows through ``step`` only (PostgreSQL keeps one; SQLite does not)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    block = step // ROLLUP_BLOCK  # the first block with steps after ``step``
    session.execute(
        delete(StepRollup).where(StepRollup.run_id == run_id, StepRollup.block >= block)
    )
    if step % ROLLUP_BLOCK:  # that block also holds steps that stay: aggregate them again
        rows = (
            f"(SELECT * FROM step_metric WHERE run_id = :run AND step > {block * ROLLUP_BLOCK}"
            " AND step <= :step) AS kept"
        )
        session.execute(text(rollup_insert(rows)), {"run": run_id, "step": step})
