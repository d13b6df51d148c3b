"""Terminal output: the tables, colour rules and the live per-label progress."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console, RenderableType

from services.cli.progress import JobProgress, Rates, by_label, progress_block, progress_line
from services.console import allow_color, fusion_note, job_status, make_console, summary_table

SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or style escape


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def colour_allowed(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("NO_COLOR", raising=False)
    allow_color(True)
    yield
    allow_color(True)


def render(renderable: RenderableType, width: int = 120, height: int = 24) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def run(label: str, seed: int, done: int, total: int | None = 10, status: str = "running"):
    return {
        "label": label,
        "seed": seed,
        "steps_done": done,
        "total_steps": total,
        "status": status,
        "diverged": False,
    }


def job(done: int, status: str = "running") -> dict[str, Any]:
    runs = [run(label, 0, done, status=status) for label in ("sgd", "adam")]
    return {
        "id": "j1",
        "name": "n",
        "status": status,
        "error": None,
        "runs": runs,
        "progress": {"steps_done": 2 * done, "total_steps": 20, "fraction": done / 10},
    }


def seeded_job(labels: int, seeds: int = 3) -> dict[str, Any]:
    """``labels`` labels of ``seeds`` runs each: the first half running, the rest queued."""
    runs = [
        run(
            f"opt{i:02d}",
            seed,
            4 if i < labels // 2 else 0,
            10,
            "running" if i < labels // 2 else "queued",
        )
        for i in range(labels)
        for seed in range(seeds)
    ]
    return {"status": "running", "runs": runs}


def test_seeds_of_a_label_are_one_bar_with_their_steps_summed() -> None:
    runs = [run("adam", 0, 10, 50), run("adam", 1, 20, 50), run("adam", 2, 30, 50, "queued")]
    runs.append(run("sgd", 0, 5, 50))
    (adam, sgd) = by_label(runs)
    assert (adam.label, adam.done, adam.total, adam.runs, adam.state) == (
        "adam",
        60,
        150,
        3,
        "running",
    )
    assert (sgd.done, sgd.total, sgd.runs) == (5, 50, 1)
    text = render(
        progress_block(
            {"status": "running", "runs": runs}, Rates(), width=100, height=24, color=False
        )
    )
    rows = text.splitlines()
    assert [row.split()[0] for row in rows] == ["adam", "sgd", "all"]  # one row per label
    assert "60/150" in rows[0] and "3 runs" in rows[0] and "65/200" in rows[2]


def test_a_label_whose_total_is_unknown_says_so() -> None:
    (adam,) = by_label([run("adam", 0, 3, 10), run("adam", 1, 0, None, "queued")])
    assert adam.total is None
    text = render(
        progress_block(
            {"status": "queued", "runs": [run("adam", 1, 0, None)]},
            Rates(),
            width=100,
            height=24,
            color=False,
        )
    )
    assert "0/?" in text and "ETA -" in text


def test_rate_and_eta_come_from_the_steps_over_time() -> None:
    clock = Clock()
    progress = JobProgress(make_console(io.StringIO()), every_seconds=1000, clock=clock)
    with progress:
        progress.update({"status": "running", "runs": [run("adam", 0, 0, 300), run("sgd", 0, 0)]})
        clock.now = 10.0
        state = {"status": "running", "runs": [run("adam", 0, 100, 300), run("sgd", 0, 10)]}
        progress.update(state)
    assert progress.rates.rate("adam") == pytest.approx(10.0)  # 100 steps in 10 s
    rows = render(progress_block(state, progress.rates, width=100, height=24, color=False))
    adam, sgd, overall = rows.splitlines()
    assert "10 steps/s" in adam and "ETA 0:00:20" in adam  # 200 steps left at 10/s
    assert "ETA 0:00:00" in sgd  # done
    assert "11 steps/s" in overall and "ETA 0:00:18" in overall  # 200 left at 11/s
    line = progress_line(state, progress.rates, 10.0)
    assert line.startswith("running: 110/310 steps (35%), 11 steps/s, ETA 0:00:18")


def test_the_rate_follows_the_last_seconds_only() -> None:
    clock = Clock()
    rates = Rates(window=20.0, clock=clock)
    for second, done in ((0, 0), (10, 1000), (30, 1100), (40, 1200)):
        clock.now = second
        rates.observe("adam", done)
    # The samples kept span the last window (10 s to 40 s): 200 steps in 30 s, not 1200/40.
    assert rates.rate("adam") == pytest.approx(200 / 30)


@pytest.mark.parametrize("width", [80, 60])
def test_the_block_for_24_labels_fits_a_24_row_terminal(width: int) -> None:
    state = seeded_job(24)
    text = render(progress_block(state, Rates(), width=width, height=24, color=False), width)
    rows = text.splitlines()
    assert len(rows) <= 23 and all(len(row) <= width for row in rows)  # the cursor's line
    running = [f"opt{i:02d}" for i in range(12)]
    assert [row.split()[0] for row in rows[:12]] == running  # those still running, each
    assert rows[-2].startswith("+12 more [")  # the rest, folded
    assert rows[-1].split()[0] == "all" and "ETA" in rows[-1]
    if width >= 80:
        assert "12 queued" in rows[-2] and "72 runs" in rows[-1]


def test_with_more_running_labels_than_rows_the_block_still_fits() -> None:
    state = {"status": "running", "runs": [run(f"opt{i:02d}", 0, 1) for i in range(40)]}
    rows = render(progress_block(state, Rates(), width=80, height=10, color=False)).splitlines()
    assert len(rows) == 9 and rows[-2].startswith("+33 more [") and "33 running" in rows[-2]
    assert [row.split()[0] for row in rows[:7]] == [f"opt{i:02d}" for i in range(7)]


def test_on_a_terminal_the_block_redraws_within_the_terminal_height() -> None:
    screen = Terminal()
    console = make_console(screen, height=24)
    console.width = 80
    with JobProgress(console) as progress:
        progress.update(seeded_job(24))
        progress.update({**seeded_job(24), "status": "succeeded"})
    # Each redraw goes back up over the block (erase the line, up one) and draws it again.
    frames = re.split(r"(?:\x1b\[2K\x1b\[1A)+\x1b\[2K", screen.getvalue())
    assert len(frames) >= 2  # redrawn in place, not appended
    assert all(frame.count("\n") <= 23 for frame in frames)
    assert "+12 more" in frames[-1] and "succeeded" in frames[-1]


def test_off_a_terminal_progress_is_plain_lines_at_a_modest_rate() -> None:
    stream, clock = io.StringIO(), Clock()
    with JobProgress(make_console(stream), every_seconds=5.0, clock=clock) as progress:
        for second, done, status in (
            (0, 0, "queued"),
            (1, 0, "running"),
            (2, 3, "running"),
            (7, 6, "running"),
            (8, 10, "succeeded"),
        ):
            clock.now = second
            progress.update(job(done, status))
    lines = stream.getvalue().splitlines()
    # queued (the first), running (a change), 2 s later skipped, 5 s later, the end
    assert [line.split(":")[0] for line in lines] == ["queued", "running", "running", "succeeded"]
    assert lines[2].startswith("running: 12/20 steps (60%)") and "running: sgd 60%" in lines[2]
    assert lines[-1].startswith("succeeded: 20/20 steps (100%)")
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


def colour_outputs(stream: io.StringIO) -> str:
    console = make_console(stream, height=24)
    with JobProgress(console) as progress:
        progress.update(job(5))
    console.print(
        summary_table(
            {"target": {"metric": "val_accuracy", "value": 0.9}, "optimizers": [{"label": "adam"}]}
        )
    )
    console.print(job_status(job(5), color=console.color_system is not None))
    return stream.getvalue()


def test_colour_only_on_a_terminal_and_never_under_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert SGR.search(colour_outputs(Terminal()))  # a terminal: colour
    assert "\x1b" not in colour_outputs(io.StringIO())  # a pipe: no escape at all
    monkeypatch.setenv("NO_COLOR", "1")
    plain = colour_outputs(Terminal())
    assert not SGR.search(plain) and re.search(r"\[#+\.+\]", plain)  # the bar still reads
    monkeypatch.delenv("NO_COLOR")
    allow_color(False)  # --no-color
    assert not SGR.search(colour_outputs(Terminal()))


def test_table_columns_follow_the_task() -> None:
    row = {
        "label": "adam",
        "final_train_loss": 1e-6,
        "final_distance": 0.001,
        "steps_to_target": 12,
        "seconds_to_target": 0.5,
        "target_reached": "1/1",
        "diverged": 0,
    }
    table = render(
        summary_table(
            {
                "task": "landscape",
                "target": {"metric": "distance", "value": 0.01},
                "optimizers": [row],
            }
        )
    )
    lines = table.splitlines()
    assert lines[0] == "target: distance <= 0.01"
    assert lines[1].split()[:3] == ["optimizer", "final", "loss"] and "best val acc" not in table
    assert lines[3].split() == ["adam", "1e-06", "0.001", "12", "0.50", "s", "1/1", "0"]
    regression = render(
        summary_table(
            {
                "task": "regression",
                "target": {"metric": "val_r2", "value": 0.9},
                "optimizers": [{**row, "best_val_accuracy": 0.95}],
            }
        )
    )
    assert "best val R²" in regression and "target: val_r2 >= 0.9" in regression


def test_a_name_with_markup_is_printed_as_it_is() -> None:
    stream = io.StringIO()
    make_console(stream).print(job_status({**job(1), "name": "[bold]x[/bold] :smile:"}))
    assert "[bold]x[/bold] :smile:" in stream.getvalue()


def test_status_marks_fused_runs_and_says_why_others_trained_alone() -> None:
    finished = job(10, "succeeded")
    finished["runs"][0].update(fused=True, fusion="fused with 1 other run")
    finished["runs"][1].update(fused=False, fusion="fusion is turned off for this job")
    lines = render(job_status(finished)).splitlines()
    assert lines[0] == "job j1: succeeded  20/20 steps (100%)  n"
    assert lines[1].endswith("succeeded fused") and not lines[2].endswith("fused")
    assert "[########################]" in lines[1] and "10/10" in lines[1]
    assert lines[-1] == (
        'adam (seed 0): trained one run at a time, as the spec asks ("execution": {"fuse": false})'
    )


@pytest.mark.parametrize(
    ("reason", "note"),
    [
        (
            "no other run of this part shares its full-batch schedule",
            "trained on its own: it takes one step per epoch on the whole training set, the "
            "others one per mini-batch",
        ),
        (
            "LBFGS re-evaluates the loss through a closure",
            "trained on its own: LBFGS computes the loss several times in each step",
        ),
        (
            "on a CPU, fused groups of this schedule hold at most 6 runs",
            "trained on its own: on a CPU at most 6 runs of this size train together",
        ),
        ("a reason the console does not know", "a reason the console does not know"),
    ],
)
def test_notes_on_runs_that_trained_on_their_own_are_in_the_users_words(
    reason: str, note: str
) -> None:
    assert fusion_note(reason) == note
    internal = ("part", "schedule", "fuse", "closure", "alone")
    if note != reason:
        assert not any(word in note.replace('"fuse"', "") for word in internal)


def test_a_label_named_all_keeps_its_own_rate() -> None:
    clock = Clock()
    progress = JobProgress(make_console(io.StringIO()), every_seconds=1000, clock=clock)
    for second, done in ((0, 0), (10, 50)):
        clock.now = second
        runs = [run("all", 0, done, 100), run("b", 0, 2 * done, 200)]
        progress.update({"status": "running", "runs": runs})
    rows = render(
        progress_block(
            {"status": "running", "runs": runs}, progress.rates, width=100, height=24, color=False
        )
    ).splitlines()
    assert " 5 steps/s" in rows[0] and " 15 steps/s" in rows[2]  # the label's, the job's


def test_a_queued_job_waits_for_a_worker_in_one_line_without_empty_bars() -> None:
    stream, clock = io.StringIO(), Clock()
    with JobProgress(make_console(stream), every_seconds=1.0, clock=clock) as progress:
        for second in range(4):  # still queued: said once, not repeated every second
            clock.now = second
            progress.update(job(0, "queued"))
        clock.now = 4
        progress.update(job(3, "running"))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("queued: waiting for a worker to start the job (")
    assert len(lines) == 2 and "0/?" not in stream.getvalue()
    assert lines[1].startswith("running: 6/20 steps")
