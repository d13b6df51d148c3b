"""The page's tables: the summary (with the over-seeds and paired tables) and the runs; for a
tuning study also the tuned-versus-one-shot table, the best setting per optimizer (with its
budget, trial counts, the steps the pruned sweep trained against a full sweep's, and the
expected best score after k trials) and the trials (services/study/results.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.db.models import FINISHED, QUEUED, TRIAL
from services.report.data import ReportData
from services.report.format import _num, _pretty, _target_text, esc

# Summary columns in display order: key → (header, number format). Headers may depend on the
# task (R² for regression), see _columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rank", "rank", "int"),
    ("label", "label", "text"),
    ("role", "role", "text"),  # a study's: tuned / one-shot
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
    if key == "rank" and row.get(key) is None:  # a study's one-shot row is not ranked
        return "&ndash;", False
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
    if isinstance(summary.get("study"), dict):
        parts.append(_study_tables(summary))
    extra = {
        k: v
        for k, v in summary.items()
        if k not in {"task", "target", "optimizers", "environment", "best", "study"}
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
    trials = _trials_section(data) if any(run.role == TRIAL for run in data.runs) else ""
    return (
        f'{trials}<section id="runs"><details><summary>Runs '
        f"({len(data.runs)})</summary>{table}</details></section>"
    )


# --- a tuning study's tables (services/study/results.py defines every value) ---


def _score_kind(metric: str, task: str) -> str:
    if metric.endswith("accuracy"):
        return "pct"
    return "r2" if metric.endswith("r2") or (task == "regression" and "acc" in metric) else "g"


def _mean_std(row: dict[str, Any], metric: str, kind: str) -> str:
    stat = (row.get("stats") or {}).get(metric) or {}
    mean, std = stat.get("mean"), stat.get("std")
    if mean is None:
        return "&ndash;"
    return _num(mean, kind) if std is None else f"{_num(mean, kind)} ± {_num(std, 'g2')}"


def _setting(values: dict[str, Any]) -> str:
    return "<code>" + esc(", ".join(f"{k}={_short(v)}" for k, v in values.items())) + "</code>"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _study_tables(summary: dict[str, Any]) -> str:
    """The study's tables: tuned versus one-shot, the best settings, expected best of k."""
    study = summary["study"]
    task = str(summary.get("task", "classification"))
    parts = [_one_shot_table(summary, task), _best_settings_table(study, task)]
    parts.append(_best_of_k_table(study, task))
    return "".join(parts)


def _one_shot_table(summary: dict[str, Any], task: str) -> str:
    rows = {r.get("label"): r for r in summary.get("optimizers", []) if isinstance(r, dict)}
    target = summary.get("target") or {}
    metric = str(target.get("metric", "final_target"))
    kind = _score_kind(metric, task)
    test_kind = "r2" if task == "regression" else "pct"
    body = []
    for label, tuned in rows.items():
        one_shot = rows.get(f"{label}:one-shot")
        if tuned.get("role") != "tuned" or one_shot is None:
            continue
        pair = one_shot.get("paired") or {}
        ci = pair.get("ci95")
        body.append(
            [
                (esc(label), True),
                (_mean_std(tuned, "final_target", kind), False),
                (_mean_std(one_shot, "final_target", kind), False),
                (_num(pair.get("mean"), kind if kind != "pct" else "g"), False),
                (f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "&ndash;", False),
                (_num(tuned.get("test_accuracy"), test_kind), False),
                (_num(one_shot.get("test_accuracy"), test_kind), False),
                (
                    f"{esc(tuned.get('target_reached'))} / {esc(one_shot.get('target_reached'))}",
                    True,
                ),
            ]
        )
    if not body:
        return ""
    test = "test R²" if task == "regression" else "test acc"
    headers = [
        "label",
        f"tuned: final {metric}",
        f"one-shot: final {metric}",
        "one-shot - tuned",
        "95 % interval",
        f"tuned {test}",
        f"one-shot {test}",
        "reached (tuned / one-shot)",
    ]
    return (
        '<h3 id="study-one-shot">Tuned versus one-shot</h3>'
        '<p class="note">Both on the same fresh seeds (common random numbers): the tuned row '
        "is the best trial's setting rerun, the one-shot row the entry's given values; the "
        "difference is seed by seed, with its 95 % t-interval. Test results come from these "
        "runs only: no trial read the test split.</p>" + _table(headers, body)
    )


def _steps_text(trained: Any, full: Any) -> str:
    if not isinstance(full, int) or full <= 0:
        return f"{_num(trained, 'int')} / &ndash;"
    saved = 1 - trained / full
    return f"{_num(trained, 'int')} / {_num(full, 'int')} ({saved:.0%} saved)"


def _best_settings_table(study: dict[str, Any], task: str) -> str:
    metric = str(study.get("selection_metric", ""))
    kind = _score_kind(metric, task)
    body = []
    for entry in study.get("entries", []):
        chosen = entry.get("best") or {}
        body.append(
            [
                (esc(entry.get("label")), True),
                (_num(chosen.get("trial"), "int"), False),
                (_setting(chosen.get("values") or {}) if chosen else "&ndash;", True),
                (_num(chosen.get("selection_score"), kind), False),
                (_num(entry.get("budget"), "int"), False),
                (
                    f"{_num(entry.get('completed'), 'int')} / {_num(entry.get('pruned'), 'int')}"
                    f" / {_num(entry.get('diverged'), 'int')}",
                    False,
                ),
                (_steps_text(entry.get("steps_trained"), entry.get("full_sweep_steps")), False),
            ]
        )
    better = "higher" if study.get("higher_is_better") else "lower"
    notes = [
        f"sampler {esc(study.get('sampler'))}; selection on {esc(metric)} at its best epoch "
        f"({better} is better); phase: {esc(study.get('phase'))}",
        "steps: trained / a full sweep's (every trial of the budget to the last epoch): "
        + _steps_text(study.get("steps_trained"), study.get("full_sweep_steps")),
    ]
    if study.get("budget_note"):
        notes.append(esc(study["budget_note"]))
    table = _table(
        [
            "label",
            "best trial",
            "its setting",
            f"selection {metric}",
            "budget",
            "completed / pruned / diverged",
            "steps trained / full sweep",
        ],
        body,
    )
    return (
        '<h3 id="study-best">Best settings</h3>'
        + "".join(f'<p class="note">{n}</p>' for n in notes)
        + table
    )


def _best_of_k_table(study: dict[str, Any], task: str) -> str:
    if study.get("expected_best_note"):
        why = esc(study["expected_best_note"])
        return f'<p class="note">Expected best after k trials: not shown ({why}).</p>'
    curves = {
        str(e.get("label")): e["expected_best_of_k"]
        for e in study.get("entries", [])
        if e.get("expected_best_of_k")
    }
    if not curves:
        return ""
    longest = max(len(c) for c in curves.values())
    ks = sorted({k for k in (2**i for i in range(12)) if k <= longest} | {longest})
    kind = _score_kind(str(study.get("selection_metric", "")), task)
    table = _table(
        ["label", *(f"k = {k}" for k in ks)],
        [
            [
                (esc(label), True),
                *((_num(c[k - 1] if k <= len(c) else None, kind), False) for k in ks),
            ]
            for label, curve in curves.items()
            for c in [curve]
        ],
    )
    return (
        "<details><summary>expected best selection score after k trials (Dodge et al. 2019: "
        "over the completed trials; pruned and diverged ones are left out)</summary>"
        f"{table}</details>"
    )


def _at(curve: list[float], k: int) -> float | None:
    return curve[k - 1] if k <= len(curve) else None


def _trials_section(data: ReportData) -> str:
    """Every trial: its sampled values, score, status and rung; the best of each entry starred."""
    from services.spec import JobSpec
    from services.study import results

    spec = JobSpec.model_validate(data.spec)
    found = results.trials(spec, data.runs, data.epochs)
    study = data.summary.get("study") or {}
    best_ids = {
        (e.get("best") or {}).get("run_id") for e in study.get("entries", []) if e.get("best")
    }
    kind = _score_kind(spec.selection_metric, str(data.summary.get("task", spec.task)))
    rows = [
        [
            (esc(t.label), True),
            (_num(t.trial, "int") + (" ★" if t.run_id in best_ids else ""), False),
            (_setting(t.values) if t.values else "(given values)", True),
            (_num(t.selection_score, kind), False),
            (esc(t.status), True),
            (_num(t.rung, "int"), False),
            (f"{_num(t.steps_trained, 'int')} / {_num(t.total_steps, 'int')}", False),
        ]
        for t in found
    ]
    table = _table(
        [
            "label",
            "trial",
            "sampled values",
            f"selection {spec.selection_metric}",
            "status",
            "pruned at epoch",
            "steps",
        ],
        rows,
    )
    return (
        f'<section id="trials"><details><summary>Trials ({len(found)}; ★ the best of each '
        f"optimizer)</summary>{table}</details></section>"
    )
