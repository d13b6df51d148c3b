"""The HTML shell of the page: the style sheet, the header, the environment and the order
of the sections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from services.db.models import FINISHED
from services.report import assets
from services.report.chart_data import MAX_POINTS, chart_data
from services.report.data import ReportData
from services.report.format import _pretty, _version, _when, esc
from services.report.tables import _runs_section, _summary_section

DEFAULT_SMOOTHING = 0.9

# ---------------------------------------------------------------- the page

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9;line-height:1.45}
main{max-width:1080px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:1.6rem;margin:0 0 4px}
h2{font-size:1.2rem;margin:0 0 8px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:16px 18px;
margin:16px 0}
.meta{color:#555;margin:0}
.note{color:#666;font-size:.9rem;margin:4px 0 8px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85rem;
font-weight:600;background:#ddd}
.status-succeeded{background:#d8f0dc;color:#1d6b2d}
.status-failed{background:#f8d7da;color:#842029}
.status-running,.status-queued{background:#fff3cd;color:#7a5b00}
.status-cancelled{background:#e2e3e5;color:#41464b}
.error{background:#f8d7da;color:#842029;padding:8px 10px;border-radius:4px;
white-space:pre-wrap}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{padding:4px 7px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f3f4f6;font-weight:600;white-space:normal;vertical-align:bottom}
th.text,td.text{text-align:left}
td.wrap{white-space:normal;word-break:break-word;text-align:left}
tbody tr:hover{background:#fafbfc}
.scroll{overflow-x:auto}
pre{background:#f6f8fa;border:1px solid #eee;border-radius:4px;padding:10px;overflow-x:auto;
font-size:.82rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:#555}dd{margin:0;word-break:break-word}
details summary{cursor:pointer;font-weight:600;margin:4px 0}
code{font-size:.85rem}
td code{white-space:normal;word-break:break-word}
footer{color:#888;font-size:.8rem;text-align:center}
"""


def _environment_section(data: ReportData) -> str:
    items: list[tuple[str, Any]] = [
        ("device", data.device or "not recorded"),
        ("optbench", _version()),
    ]
    environment = data.summary.get("environment")
    if isinstance(environment, dict):
        items += [(str(k), v) for k, v in environment.items()]
    elif environment is not None:
        items.append(("environment", environment))
    if not any(k.lower().startswith("torch") for k, _ in items):
        items.append(("torch", "not recorded (the worker that trained the job records it)"))
    items += [
        ("created", _when(data.created_at)),
        ("started", _when(data.started_at)),
        ("finished", _when(data.finished_at)),
    ]
    if data.started_at and data.finished_at:
        items.append(("wall time", f"{(data.finished_at - data.started_at).total_seconds():.3g} s"))
    body = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v if isinstance(v, str) else _pretty(v))}</dd>"
        for k, v in items
    )
    return f'<section id="environment"><h2>Environment</h2><dl>{body}</dl></section>'


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element early: every ``<`` escaped."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def _charts_section(data: ReportData, smoothing: float, max_points: int) -> str:
    payload = _json_for_script(chart_data(data, smoothing=smoothing, max_points=max_points))
    return (
        '<section id="charts"><h2>Charts</h2><div id="ob-charts"><noscript><p class="note">'
        "The charts are drawn by the page's script; with scripts off, the numbers are in "
        "the tables.</p></noscript></div>"
        f'<script type="application/json" id="ob-chart-data">{payload}</script></section>'
    )


def build_page(
    data: ReportData, *, smoothing: float = DEFAULT_SMOOTHING, max_points: int = MAX_POINTS
) -> str:
    """The page for already loaded data (``render_report`` = ``load`` + this)."""
    spec = data.spec
    task = str(data.summary.get("task") or spec.get("task") or "classification")
    labels = list(dict.fromkeys(run.label for run in data.runs))
    dataset = spec.get("dataset") or {}
    model = spec.get("model") or {}
    seeds = spec.get("seeds") or []
    facts = [
        f"data set <b>{esc(dataset.get('name', '?'))}</b>",
        f"model <b>{esc(model.get('name', '?'))}</b>",
        f"{len(labels)} optimizers",
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}",
        f"{esc(spec.get('epochs', '?'))} epochs",
    ]
    if task != "landscape":
        facts.append(f"batch size {esc(spec.get('batch_size', '?'))}")
    status = esc(data.status)
    header = (
        f"<header><h1>{esc(data.name)}</h1>"
        f'<p class="meta"><span class="status status-{status}">{status}</span> '
        f"job <code>{esc(data.job_id)}</code> · {esc(task)} · {' · '.join(facts)}</p>"
    )
    if data.status not in FINISHED:
        header += (
            '<p class="note">The job is still running: this report shows what is stored so far.</p>'
        )
    if data.error:
        header += f'<p class="error">{esc(data.error)}</p>'
    header += "</header>"
    sections = [
        header,
        _summary_section(data, task),
        _charts_section(data, smoothing, max_points),
        _runs_section(data),
        f'<section id="spec"><h2>Spec</h2><pre>{esc(_pretty(spec))}</pre></section>',
        _environment_section(data),
        f"<footer>optbench {esc(_version())} · report generated "
        f"{esc(_when(datetime.now(UTC)))}</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optbench report: {esc(data.name)}</title>"
        f"<style>{_CSS}{assets.styles()}</style></head>"
        f"<body><main>{''.join(s for s in sections if s)}</main>"
        f"<script>{assets.library()}</script>"
        f'<script type="module">{assets.module()}</script></body></html>\n'
    )
