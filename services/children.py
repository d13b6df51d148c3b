"""The service's processes as children of one ``optbench`` command (``demo``, ``suite``
without ``--url``): the API and workers, started with the commands a cluster runs.

The demo's worker can be started before the command has imported anything of its own
(``start_early``, called by services/entry.py): the worker takes longest to be ready
(torch, torch._dynamo and its warm-up, about 5 s on the 2-core VM) while the command's own
imports (click, rich, httpx, SQLAlchemy, pydantic) took 0.8 s before it started it.
``Children.start`` with the same arguments then takes that process over. Only the standard
library here, so that starting early is early.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.client import ApiClient

STOP_SECONDS = 15.0
# One worker process that trains itself (no pool to fork): the demo's job is one part.
DEMO_WORKER_ARGS = ("worker", "--log-level", "WARNING", "--pool", "solo", "--concurrency", "1")

Process = subprocess.Popen[bytes]


def spawn(*args: str) -> Process:
    """``optbench ARGS...`` as a child, in this environment, its output discarded."""
    command = [sys.executable, "-m", "services.cli", *args]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )


_early: dict[tuple[str, ...], Process] = {}  # started by start_early, not yet adopted


def start_early(*args: str) -> None:
    """Start ``optbench ARGS...`` now, for ``Children.start`` to adopt later. Stopped at
    exit if nothing adopts it (the command stopped at a usage mistake, say)."""
    if args not in _early:
        _early[args] = spawn(*args)


def stop(processes: Sequence[Process], grace: float) -> None:
    """Ask them all to stop at once (their shutdowns overlap); kill those still running
    ``grace`` seconds later."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@atexit.register
def _stop_unadopted() -> None:
    stop(list(_early.values()), STOP_SECONDS)
    _early.clear()


class Children:
    """Child processes, all asked to stop at once when the block ends (one after another,
    the worker's warm shutdown and the API's added up to seconds after the table), each
    killed if it has not stopped within ``grace`` seconds."""

    def __init__(self) -> None:
        self.processes: list[Process] = []
        self.grace = STOP_SECONDS  # how long they may take to stop before they are killed

    def start(self, *args: str) -> Process:
        """``optbench ARGS...``: the one ``start_early`` started with these arguments if it
        is still running, else a new one."""
        process = _early.pop(args, None)
        if process is None or process.poll() is not None:
            process = spawn(*args)
        self.processes.append(process)
        return process

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.processes, self.grace)


def wait_until_up(client: ApiClient, api: Process, timeout: float = 60) -> None:
    """Until the API answers ready; an error if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with status {api.returncode}")
        if client.ready():
            return
        time.sleep(0.05)
    raise RuntimeError("the API did not become ready in time")
