"""README's first command, ``optbench demo``, on the embedded default: it needs no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.spec import LECTURE_SPEC


def test_demo_prints_the_eight_optimizer_table(tmp_path: Path) -> None:
    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path), "OPTBENCH_WORKER_METRICS_PORT": "0"}
    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
        env.pop(name, None)
    result = subprocess.run(
        # README's console script: its entry point starts the worker first (services/entry.py)
        [str(Path(sys.executable).parent / "optbench"), "demo", "--epochs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    rows = [line.split()[0] for line in lines[header + 2 : header + 10]]
    assert rows == [entry["name"] for entry in LECTURE_SPEC["optimizers"]]
    assert "succeeded" in result.stdout
    assert (tmp_path / "optbench.db").exists()  # results stay queryable afterwards
