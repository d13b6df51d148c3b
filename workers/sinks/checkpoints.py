"""Engine checkpoints → the database (services/db/checkpoints.py), after the rows they follow.

A checkpoint at step ``s`` promises that the run's steps through ``s`` are stored: resuming
from it deletes the rows after ``s`` and trains them again. So the state is serialised at
once (its tensors are live), then the SQL sink is flushed (its writer thread commits every
row handed over so far), and only then is the checkpoint written, one transaction for all
the runs of a fused group.

A checkpoint that cannot be written because the database is unreachable is skipped with a
warning, not raised: the run trains on (its rows wait in the sink, which retries), and the
next checkpoint is written once the database is back; losing one only means more steps to
train again after a crash.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from sqlalchemy.orm import Session

from services.db import checkpoints
from services.db.models import RunCheckpoint
from services.db.session import unit_of_work
from services.db.transient import describe, is_transient
from services.telemetry import CHECKPOINT_BYTES, CHECKPOINT_SECONDS, CHECKPOINTS
from workers.engine import Hooks, RunConfig
from workers.engine.checkpoint import RunState
from workers.sinks.sql import SqlSink

log = logging.getLogger(__name__)


def encode(state: RunState) -> bytes:
    buffer = io.BytesIO()
    torch.save(state.state, buffer)
    return buffer.getvalue()


def decode(row: RunCheckpoint) -> RunState:
    """A stored checkpoint, read with ``weights_only``: tensors and plain containers only."""
    state: dict[str, Any] = torch.load(io.BytesIO(row.state), map_location="cpu", weights_only=True)
    return RunState(row.step, row.epoch, row.layout, state)


def load(session: Session, run_ids: list[int]) -> dict[int, RunState]:
    return {row.run_id: decode(row) for row in checkpoints.load(session, run_ids)}


class CheckpointSink(Hooks):
    def __init__(self, rows: SqlSink) -> None:
        self.rows = rows
        self.written = 0  # checkpoints stored (one per run)
        self.bytes = 0
        self.seconds = 0.0

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        started = time.perf_counter()
        encoded = [(run.key, state, encode(state)) for run, state in states]
        self.rows.flush()
        try:
            with unit_of_work() as session:
                for key, state, data in encoded:
                    checkpoints.save(session, key, state.step, state.epochs, state.layout, data)
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("checkpoint at step %d skipped: %s", states[0][1].step, describe(error))
            return
        size, seconds = sum(len(data) for _, _, data in encoded), time.perf_counter() - started
        self.written += len(encoded)
        self.bytes += size
        self.seconds += seconds
        CHECKPOINTS.inc(len(encoded))
        CHECKPOINT_BYTES.inc(size)
        CHECKPOINT_SECONDS.inc(seconds)
