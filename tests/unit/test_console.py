"""Terminal output: the summary table and the per-run progress board."""

from __future__ import annotations

import io

from services.console import RunBoard, job_status, summary_table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def job(done: int, status: str = "running") -> dict:
    runs = [
        {
            "label": label,
            "seed": 0,
            "steps_done": done,
            "total_steps": 10,
            "status": status,
            "diverged": False,
        }
        for label in ("sgd", "adam")
    ]
    return {
        "id": "j1",
        "name": "n",
        "status": status,
        "error": None,
        "runs": runs,
        "progress": {"steps_done": 2 * done, "total_steps": 20, "fraction": done / 10},
    }


def test_board_redraws_its_block_in_place_on_a_terminal() -> None:
    stream = Terminal()
    board = RunBoard(stream)
    board.update(job(5))
    first = stream.getvalue()
    assert first.count("\n") == 3 and "[############............]" in first
    board.update(job(10, "succeeded"))
    second = stream.getvalue()[len(first) :]
    assert second.startswith("\x1b[3F")  # back up over the three lines drawn before
    assert "succeeded" in second and "10/10" in second


def test_board_prints_sparse_lines_elsewhere() -> None:
    stream = io.StringIO()
    board = RunBoard(stream, every_seconds=3600)
    board.update(job(1))
    board.update(job(2))  # within the interval: not printed
    board.update(job(10, "succeeded"))  # the end is always printed
    assert stream.getvalue().splitlines() == ["running: 2/20 steps", "succeeded: 20/20 steps"]


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
    table = summary_table(
        {"task": "landscape", "target": {"metric": "distance", "value": 0.01}, "optimizers": [row]}
    )
    assert table.splitlines()[0] == "target: distance <= 0.01"
    assert "final distance" in table and "best val acc" not in table
    regression = summary_table(
        {
            "task": "regression",
            "target": {"metric": "val_r2", "value": 0.9},
            "optimizers": [{**row, "best_val_accuracy": 0.95}],
        }
    )
    assert "best val R²" in regression and "target: val_r2 >= 0.9" in regression


def test_status_marks_fused_runs_and_says_why_others_trained_alone() -> None:
    finished = job(10, "succeeded")
    finished["runs"][0].update(fused=True, fusion="fused with 1 other run")
    finished["runs"][1].update(fused=False, fusion="fusion is turned off for this job")
    lines = job_status(finished).splitlines()
    assert lines[1].endswith("succeeded fused") and not lines[2].endswith("fused")
    assert lines[-1] == "trained alone: adam (seed 0): fusion is turned off for this job"
