"""The sweep benchmark (benchmarks/bench_sweep.py): its grid and study spec, and that its
quick mode runs end to end (plain loop, optbench, pruned, small job) and reports what it
measured."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import bench_sweep
from services.spec import JobSpec
from services.study import phases


def test_the_grid_is_deepobs_36_log_spaced_rates_from_1e_5_to_1e2() -> None:
    grid = bench_sweep.lr_grid(36)
    assert len(grid) == 36
    assert grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e2)
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    assert all(r == pytest.approx(10 ** (7 / 35), rel=1e-5) for r in ratios)


def test_the_study_spec_is_288_grid_trials_without_baselines_and_one_rerun_seed() -> None:
    grid = bench_sweep.lr_grid(36)
    spec = JobSpec.model_validate(
        bench_sweep.study_spec(bench_sweep.WORKLOADS["mnist1d"], 20, grid, False, pruning=True)
    )
    assert spec.tuning is not None and spec.tuning.sampler == "grid"
    assert spec.tuning.baseline is False and len(spec.rerun_seeds) == 1
    assert spec.tuning.pruning is not None and spec.tuning.pruning.rungs(20) == [2, 6, 18]
    assert spec.model.hidden == [256, 256] and spec.batch_size == 128  # type: ignore[union-attr]
    runs = phases.first_runs(spec)
    assert len(runs) == 288
    assert Counter(run.label for run in runs) == {
        entry.display_label: 36 for entry in spec.optimizers
    }
    for label in {run.label for run in runs}:
        rates = [run.hyperparameters["lr"] for run in runs if run.label == label]
        assert rates == grid


def test_quick_mode_runs_every_measurement_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    bench_sweep.main(["--quick", "--workloads", "digits", "--points", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "x plain" in printed and "pruning (successive_halving" in printed
    result = json.loads(out.read_text())
    assert result["matmul_gflops"] > 0 and result["grid"] == bench_sweep.lr_grid(3)
    digits = result["workloads"]["digits"]
    plain, full, pruned = digits["plain"], digits["optbench"], digits["pruned"]
    assert full["trials"] == pruned["trials"] == 24
    # every step trained was stored (the benchmark checks it; here: the counts add up)
    assert full["stored_rows"] == full["trial_steps"] + full["rerun_steps"] > 0
    # the plain loop trains the same 24 trials: their steps, less what diverged in optbench
    assert plain["steps"] == full["full_steps"] >= full["trial_steps"]
    assert pruned["pruned"] >= 1 and pruned["trial_steps"] < full["trial_steps"]
    for side in (plain, full, pruned):
        assert sorted(side["chosen_lr"]) == sorted(
            e["name"] for e in bench_sweep.LECTURE_SPEC["optimizers"]
        )
        assert set(side["chosen_lr"].values()) <= set(result["grid"])
        assert side["seconds"] > 0 and side["peak_mib"] > 0 and math.isfinite(side["added_mib"])
    assert digits["small optbench"]["epochs"] == digits["small plain"]["epochs"] == 1
