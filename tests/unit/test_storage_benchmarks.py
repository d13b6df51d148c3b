"""The storage benchmarks (issue 17, point 5): the ABAB pairing that cancels a drifting
machine out of the overhead, and a smoke run of each benchmark on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import bench_metric_writes, bench_storage_overhead
from benchmarks.bench_storage_overhead import paired, spread
from tests.conftest import POSTGRES_ADMIN_URL


def test_a_linear_drift_of_the_machine_cancels_out_of_each_pair() -> None:
    # A B A B A: the machine slows by 10 % per training; the sink costs 5 % on top.
    plain = [1.0, 1.2, 1.4]
    sink = [1.1 * 1.05, 1.3 * 1.05]
    assert paired(plain, sink) == pytest.approx([0.05, 0.05])
    # Compared with the A before it alone, the drift would read as +15.5 %.
    assert sink[0] / plain[0] - 1 == pytest.approx(0.155)


def test_the_spread_is_the_median_quartiles_and_range_in_percent() -> None:
    text = spread([0.01, 0.02, 0.03, 0.04, 0.10])
    assert text.startswith("median +3.0 %, quartiles +2.0 % to +4.0 %")
    assert text.endswith("range +1.0 % to +10.0 % (5 pairs)")
    assert spread([0.02, -0.01]) == "median +0.5 %, range -1.0 % to +2.0 % (2 pairs)"


@pytest.fixture
def scratch_server(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The benchmarks make (and drop) their own database on the test server; this process's
    settings come back afterwards."""
    from tests.conftest import reset_process_state

    monkeypatch.delenv("OPTBENCH_DATABASE_URL", raising=False)
    yield POSTGRES_ADMIN_URL
    reset_process_state()


def test_the_storage_overhead_benchmark_runs_abab_pairs_and_checks_every_row(
    scratch_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_storage_overhead.main(
        [
            *("--epochs", "1", "--pairs", "2", "--rows", "0", "--patience", "0"),
            *("--admin-url", scratch_server),
        ]
    )
    out = capsys.readouterr().out
    assert out.count("  A: no-op hooks") == 3 and out.count("  B: SQL sink") == 2
    assert out.count("all stored") == 2  # every step and epoch row reached the database
    assert "storage overhead, wall: median" in out and "(2 pairs)" in out
    assert "goal: median paired overhead <= 5%: " in out


def test_the_metric_write_benchmark_compares_each_repeat_with_its_own_copy(
    scratch_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_metric_writes.main(
        [
            *("--rows", "4000", "--runs", "2", "--flush", "1000", "--large-flush", "0"),
            *("--repeats", "2", "--no-copy-per-flush", "--admin-url", scratch_server),
        ]
    )
    out = capsys.readouterr().out
    assert out.count("(repeat 1):") == 3 and out.count("(repeat 2):") == 3  # each case
    assert "sink's writer thread, flush=1000" in out
    assert "goal: sink, flush=1000 (each flush its own transaction) >= 0.5x raw COPY: " in out
