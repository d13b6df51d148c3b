"""The demo's child processes (services/children.py): a worker started before the command's
imports is the one the command then uses, and one nothing adopts is stopped at exit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from services import children, entry


@pytest.fixture
def sleepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[children.Process]]:
    """``spawn`` starts a process that only sleeps (not the service), and records it."""
    started: list[children.Process] = []

    def spawn(*args: str) -> children.Process:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(process)
        return process

    monkeypatch.setattr(children, "spawn", spawn)
    yield started
    for process in started:
        process.kill()
        process.wait()
    children._early.clear()


def test_a_child_started_early_is_the_one_the_command_adopts(
    sleepers: list[children.Process],
) -> None:
    children.start_early("worker", "--pool", "solo")
    with children.Children() as group:
        adopted = group.start("worker", "--pool", "solo")
        other = group.start("api")
    assert sleepers == [adopted, other]  # no second worker
    assert adopted.poll() is not None and other.poll() is not None  # both stopped


def test_an_early_child_that_died_is_started_again(sleepers: list[children.Process]) -> None:
    children.start_early("worker")
    sleepers[0].kill()
    sleepers[0].wait()
    with children.Children() as group:
        process = group.start("worker")
    assert process is not sleepers[0] and len(sleepers) == 2


def test_a_usage_mistake_stops_the_worker_the_demo_started_early(
    sleepers: list[children.Process],
) -> None:
    assert entry.main(["demo", "--preset", "nope"]) == 2
    assert len(sleepers) == 1  # started before the arguments were read ...
    children._stop_unadopted()  # ... and stopped at exit (atexit)
    assert sleepers[0].poll() is not None


def test_only_the_demo_starts_a_worker_early(sleepers: list[children.Process]) -> None:
    assert entry.main(["demo", "--help"]) == 0
    assert entry.main(["list", "--help"]) == 0
    assert sleepers == []
