"""Cooperative shutdown: a worker asked to stop (SIGTERM: ``docker stop``, a rolling update)
stops the runs it trains at their next flush, with a checkpoint, and sends them back to the
queue, instead of making the shutdown wait for the end of a job that may take hours, or being
killed at the end of the grace period and losing the work since the last checkpoint.

Celery's warm shutdown starts in the worker's main process (``worker_shutting_down``), but the
training happens in its pool's child processes, forked from it. The flag is therefore one byte
of shared memory, made when this module is imported (before the pool forks: workers/
celery_app.py imports it), set by the main process and read by the children at each flush.

``ShutdownCheck`` is the engine's side (a hook): at a flush point it asks for a checkpoint
when the flag is set (``wants_checkpoint``), and once that checkpoint is stored
(``on_checkpoint``, after the checkpoint sink) it raises ``WorkerStopping``. The task then
releases the runs and sends them to the queue again (workers/leases.py, workers/tasks.py);
the next worker resumes them from that checkpoint, with nothing to train again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence

from workers.engine import Hooks, RunConfig
from workers.engine.checkpoint import RunState

_REQUESTED = multiprocessing.RawValue("b", 0)


def request() -> None:
    """Ask every training process of this worker to stop at its next flush."""
    _REQUESTED.value = 1


def requested() -> bool:
    return bool(_REQUESTED.value)


def reset() -> None:
    """Tests: forget a request."""
    _REQUESTED.value = 0


class WorkerStopping(Exception):
    """This worker is shutting down: the part stopped after a checkpoint, to be sent again."""


class ShutdownCheck(Hooks):
    def wants_checkpoint(self) -> bool:
        return requested()

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        if requested():
            raise WorkerStopping("the worker is shutting down")
