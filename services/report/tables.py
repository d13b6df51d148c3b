"""The page's tables: the summary (with the over-seeds and paired tables) and the runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.db.models import FINISHED, QUEUED
from services.report.data import ReportData
from services.report.format import _num, _pretty, _target_text, esc

# Summary columns in display order: key → (header, number format). Headers may depend on the
# task (R² for regression), see _columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rank", "rank", "int"),
    ("label", "label", "text"),
    ("optimizer", "optimizer", "text"),
    ("runs", "runs", "int"),
    ("final_train_loss", "final train loss", "g"),
    ("best_val_accuracy", "best val accuracy", "pct"),
    ("test_loss", "test loss", "g"),
    ("test_accuracy", "test accuracy", "pct"),
    ("final_distance", "final distance", "g"),
    ("steps_to_target", "steps to target", "int"),
    ("epochs_to_target", "epochs to target", "int"),
    ("seconds_to_target", "time to target", "s"),
    ("target_reached", "reached", "text"),
    ("auc_train_loss", "area under loss", "g"),
    ("diverged", "diverged", "int"),
)
_ALWAYS = {"label", "steps_to_target", "seconds_to_target", "target_reached", "diverged"}
_NESTED = {"stats", "paired"}
# Flat keys left out of the main table: the over-seeds table shows them (and "reached" is
# the success rate as k/n).
_IN_SEEDS_TABLE = {"best_train_loss", "final_val_accuracy", "final_target", "success_rate"}
_METRIC_NAMES = {
    "final_train_loss": "final train loss",
    "best_train_loss": "best train loss",
    "final_val_accuracy": "final val acc",
    "best_val_accuracy": "best val acc",
    "final_distance": "final distance",
    "test_loss": "test loss",
    "test_accuracy": "test acc",
    "final_target": "final target metric",
    "auc_train_loss": "area under loss",
    "steps_to_target": "steps to target",
    "epochs_to_target": "epochs to target",
    "seconds_to_target": "time to target (s)",
}


def _columns(rows: list[dict[str, Any]], task: str) -> list[tuple[str, str, str]]:
    present = {k for row in rows for k in row}
    non_empty = {k for row in rows for k, v in row.items() if v is not None}
    columns = []
    for key, header, kind in _COLUMNS:
        if key in present and (key in non_empty or key in _ALWAYS):
            if key == "best_val_accuracy" and task == "regression":
                header, kind = "best val R²", "r2"
            if key == "test_accuracy" and task == "regression":
                header, kind = "test R²", "r2"
            if key == "final_train_loss" and task == "landscape":
                header = "final loss"
            columns.append((key, header, kind))
    known = {key for key, _, _ in _COLUMNS} | _NESTED | _IN_SEEDS_TABLE
    for row in rows:  # fields added to the summary later show up as they are
        for key, value in row.items():
            if key not in known and not isinstance(value, dict | list):
                known.add(key)
                columns.append((key, key.replace("_", " "), "g"))
    return columns


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """A table; each cell is (escaped html, is_text); text columns are left-aligned."""
    text_columns = [all(row[i][1] for row in rows) if rows else False for i in range(len(headers))]
    head = "".join(
        f'<th class="text">{esc(h)}</th>' if text else f"<th>{esc(h)}</th>"
        for h, text in zip(headers, text_columns, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="text">{c}</td>' if text else f"<td>{c}</td>" for c, text in row)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _cell(row: dict[str, Any], key: str, kind: str, status: str) -> tuple[str, bool]:
    if key == "rank" and status == QUEUED:  # nothing has trained: every rank would be 1
        return "&ndash;", False
    if key == "rank" and status not in FINISHED:  # a running job's ranks may still change
        return f"{_num(row.get(key), kind)} (provisional)", False
    return (esc(row.get(key, "")) if kind == "text" else _num(row.get(key), kind)), kind == "text"


def _summary_section(data: ReportData, task: str) -> str:
    summary = data.summary
    rows = [r for r in summary.get("optimizers", []) if isinstance(r, dict)]
    target = summary.get("target") or {}
    parts = ['<section id="summary"><h2>Summary</h2>']
    notes = []
    if target:
        notes.append(f"target: {esc(_target_text(target))}")
    if summary.get("best") is not None:
        notes.append(f"best: <b>{esc(summary['best'])}</b>")
    if notes:
        parts.append(f'<p class="note">{" · ".join(notes)}</p>')
    columns = _columns(rows, task)
    parts.append(
        _table(
            [h for _, h, _ in columns],
            [[_cell(row, key, kind, data.status) for key, _, kind in columns] for row in rows],
        )
    )
    parts.append(
        '<p class="note">Value columns are means over seeds; to-target columns are medians '
        "over the seeds that reached the target; a diverged run counts as not reached.</p>"
    )
    parts.append(_stats_table(rows))
    parts.append(_paired_table(rows))
    extra = {
        k: v
        for k, v in summary.items()
        if k not in {"task", "target", "optimizers", "environment", "best"}
    }
    if extra:
        parts.append(
            f"<details><summary>more summary fields</summary><pre>{esc(_pretty(extra))}</pre>"
            "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _stats_table(rows: list[dict[str, Any]]) -> str:
    """``stats`` {metric: {mean, std, median, n}} as mean ± std (median and n on hover)."""
    stats = {
        str(row.get("label")): row["stats"] for row in rows if isinstance(row.get("stats"), dict)
    }
    metrics: list[str] = []
    for per_label in stats.values():
        for metric, value in per_label.items():
            has_values = not isinstance(value, dict) or value.get("n") not in (0, None)
            if metric not in metrics and has_values:
                metrics.append(metric)
    if not metrics:
        return ""

    def cell(value: Any) -> str:
        if not isinstance(value, dict):
            return _num(value)
        if value.get("n") == 0:
            return "&ndash;"
        mean, std = value.get("mean"), value.get("std")
        text = _num(mean) if std is None else f"{_num(mean)} ± {_num(std, 'g2')}"
        hover = ", ".join(
            f"{k} {_num(value[k], 'int' if k == 'n' else 'g')}"
            for k in ("median", "n")
            if value.get(k) is not None
        )
        return f'<span title="{esc(hover)}">{text}</span>' if hover else text

    table = _table(
        ["label", *[_METRIC_NAMES.get(m, m.replace("_", " ")) for m in metrics]],
        [
            [(esc(label), True), *[(cell(per_label.get(m)), False) for m in metrics]]
            for label, per_label in stats.items()
        ],
    )
    return (
        "<details><summary>over seeds: mean ± sample std (hover: median, n)</summary>"
        f"{table}</details>"
    )


def _paired_table(rows: list[dict[str, Any]]) -> str:
    """``paired``: each label minus the best, seed by seed, on the target metric."""
    paired = [(str(row.get("label")), row["paired"]) for row in rows if row.get("paired")]
    if not paired:
        return ""
    if not all(isinstance(p, dict) and "mean" in p for _, p in paired):
        body = esc(_pretty(dict(paired)))
        return f"<details><summary>paired comparisons</summary><pre>{body}</pre></details>"

    def interval(value: Any) -> str:
        if isinstance(value, list | tuple) and len(value) == 2:
            return f"[{_num(value[0])}, {_num(value[1])}]"
        return _num(value)

    table = _table(
        ["label", "reference", "metric", "seeds", "mean of label - reference", "95 % interval"],
        [
            [
                (esc(label), True),
                (esc(p.get("reference", "")), True),
                (esc(p.get("metric", "")), True),
                (_num(p.get("n"), "int"), False),
                (_num(p.get("mean")), False),
                (interval(p.get("ci95")), False),
            ]
            for label, p in paired
        ],
    )
    return (
        "<details><summary>paired comparisons with the best, seed by seed (same initial "
        f"weights and batches)</summary>{table}</details>"
    )


def _runs_section(data: ReportData) -> str:
    rows = [
        [
            (esc(run.label), True),
            (esc(run.optimizer), True),
            (_num(run.seed, "int"), False),
            (esc(run.status), True),
            (f"{_num(run.steps_done, 'int')} / {_num(run.total_steps, 'int')}", False),
            (
                f"step {_num(run.diverged_at_step, 'int')}" if run.diverged else "no",
                False,
            ),
            (_num(run.test_loss), False),
            (_num(run.test_accuracy), False),
            (
                f"<code>{esc(json.dumps(run.hyperparameters, separators=(', ', '=')))}</code>",
                True,
            ),
        ]
        for run in data.runs
    ]
    table = _table(
        [
            "label",
            "optimizer",
            "seed",
            "status",
            "steps",
            "diverged",
            "test loss",
            "test acc",
            "hyperparameters",
        ],
        rows,
    )
    return (
        '<section id="runs"><details><summary>Runs '
        f"({len(data.runs)})</summary>{table}</details></section>"
    )
