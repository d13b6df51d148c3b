"""A training process keeps its long-lived objects out of the cyclic collector's walk
(workers/warm.py, ``freeze_long_lived``): a full collection over a worker's ~380,000 objects
took 210 ms and landed on whichever member's step was being timed, so its stored seconds
(time to target) were wrong by that much."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli import main
from services.spec import LECTURE_SPEC
from workers import celery_app


class LongLived:
    """An object alive before the process trains, as an imported module's are."""


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process as it was: nothing frozen before, everything unfrozen after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _walked(obj: object) -> bool:
    """Whether a full collection walks ``obj`` (frozen objects are in no generation)."""
    return any(tracked is obj for tracked in gc.get_objects())


def test_a_training_process_freezes_what_it_holds_after_its_warm_up(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(celery_app, "serve_metrics", lambda settings, index: None)
    before = LongLived()
    assert _walked(before)
    celery_app._init_training_process(0)
    assert not _walked(before)
    assert gc.get_freeze_count() > 0
    # What is created afterwards (a job's objects) is collected as usual.
    assert _walked(LongLived())


def test_optbench_run_freezes_before_it_trains(
    unfrozen: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    before = LongLived()
    import workers.execution as execution

    train = execution.execute_job

    def watched(*args: Any, **kwargs: Any) -> str:
        seen.append(_walked(before))  # the moment training starts
        return train(*args, **kwargs)

    monkeypatch.setattr(execution, "execute_job", watched)
    spec_file = tmp_path / "job.json"
    spec = {**LECTURE_SPEC, "epochs": 1, "optimizers": LECTURE_SPEC["optimizers"][:2]}
    spec_file.write_text(json.dumps(spec))
    assert main(["run", str(spec_file), "--json"]) == 0
    assert seen == [False]
