"""The HTML report of a suite: one self-contained page drawn from the body of
``GET /v1/suites/{id}/scores`` (the suite contract), served by ``GET /v1/suites/{id}/report``.

    from services.report.suite_page import render_suite_report, suite_csp
    html = render_suite_report(scores)     # scores: the scores document, as a dict
    HTMLResponse(html, headers={"Content-Security-Policy": suite_csp()})

Like the job report (page.py): inline CSS, the vendored uPlot and the web page's own suite
modules inlined (services/web/js/suite_charts.js, so the report and the page draw one
picture), the scores embedded as JSON, nothing fetched, so it works offline once saved. The
page also carries its Content-Security-Policy in a ``<meta>`` element, so a saved copy runs
exactly its two inline scripts too. What the script draws (the score table, the performance
profile, the heat map of r(s, w) with each workload's job reports linked, the definition)
is also written as plain tables in a ``<noscript>``, so the numbers are there without it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from services.report import assets
from services.report.assets import suite_csp
from services.report.format import _version, _when, esc
from services.report.page import _CSS, _json_for_script

__all__ = ["render_suite_report", "suite_csp"]

_STATUS_NOTE = {
    "queued": "The suite has not started: no scores yet.",
    "running": "The suite is still running: the scores are over the jobs finished so far.",
    "failed": "The suite failed: the scores are over the jobs that finished.",
    "cancelled": "The suite was cancelled: the scores are over the jobs that finished.",
}


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "&ndash;"
    return f"{value:.{digits}g}"


def _job_links(workload: dict[str, Any]) -> str:
    """A workload's job reports, one link per study (what the script's heat map links too)."""
    links = " ".join(
        f'<a href="/v1/jobs/{esc(job.get("job_id"))}/report">study {esc(job.get("study"))}</a>'
        for job in workload.get("jobs") or []
    )
    return f"<br>{links}" if links else ""


def _fallback_tables(scores: dict[str, Any]) -> str:
    """The score table and r(s, w) as plain HTML, for readers without scripts."""
    rows = "".join(
        f"<tr><td>{esc(row.get('rank'))}</td><td class=text>{esc(row.get('optimizer'))}</td>"
        f"<td>{_number(row.get('score'))}</td><td>{_number(row.get('geomean_speedup'))}</td>"
        f"<td>{esc(row.get('solved'))} / {esc(row.get('workloads'))}</td></tr>"
        for row in sorted(scores.get("table") or [], key=lambda r: r.get("rank") or 0)
    )
    scores = {**scores, "workloads": scores.get("workloads") or []}
    workloads = [str(w.get("name")) for w in scores["workloads"]]
    cells = {(c.get("optimizer"), c.get("workload")): c for c in scores.get("cells") or []}

    def ratio(label: str, workload: str) -> str:
        r = (cells.get((label, workload)) or {}).get("r")
        return "miss" if r is None else _number(r)

    heat = "".join(
        f"<tr><th class=text>{esc(label)}</th>"
        + "".join(f"<td>{ratio(label, w)}</td>" for w in workloads)
        + "</tr>"
        for label in scores.get("optimizers") or []
    )
    head = "".join(f"<th>{esc(w.get('name'))}{_job_links(w)}</th>" for w in scores["workloads"])
    return (
        "<noscript><p class=note>The charts are drawn by the page's script; the numbers:</p>"
        "<table><thead><tr><th>rank</th><th class=text>optimizer</th><th>score B</th>"
        f"<th>speedup vs {esc(scores.get('reference'))}</th><th>solved</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p class=note>r(s, w); miss = never reached (∞)</p>"
        f"<div class=scroll><table><thead><tr><th class=text>optimizer</th>{head}</tr></thead>"
        f"<tbody>{heat}</tbody></table></div></noscript>"
    )


def render_suite_report(scores: dict[str, Any]) -> str:
    """The suite's report for its scores document (see the module docstring)."""
    name = str(scores.get("name") or "suite")
    status = str(scores.get("status") or "unknown")
    workloads = scores.get("workloads") or []
    optimizers = scores.get("optimizers") or []
    measure = "training seconds" if scores.get("time_measure") == "seconds" else "optimizer steps"
    facts = [
        f"{len(workloads)} workload{'s' if len(workloads) != 1 else ''}",
        f"{len(optimizers)} optimizer{'s' if len(optimizers) != 1 else ''}",
        f"time measure: {esc(measure)}",
        f"r_max {esc(scores.get('r_max'))}",
        f"speedups against <b>{esc(scores.get('reference'))}</b>",
    ]
    header = (
        f"<header><h1>{esc(name)}</h1>"
        f'<p class="meta"><span class="status status-{esc(status)}">{esc(status)}</span> '
        f"suite <code>{esc(scores.get('suite_id'))}</code> · {' · '.join(facts)}</p>"
    )
    if status in _STATUS_NOTE:
        header += f'<p class="note">{esc(_STATUS_NOTE[status])}</p>'
    header += (
        "<p class=\"note\">Each workload's header links to its jobs' reports on the API that "
        "served this page.</p></header>"
    )
    payload = _json_for_script(scores)
    results = (
        f'<section id="results"><div id="ob-suite">{_fallback_tables(scores)}</div>'
        f'<script type="application/json" id="ob-suite-data">{payload}</script></section>'
    )
    footer = (
        f"<footer>optbench {esc(_version())} · report generated "
        f"{esc(_when(datetime.now(UTC)))}</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(suite_csp())}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optbench suite report: {esc(name)}</title>"
        f"<style>{_CSS}{assets.suite_styles()}</style></head>"
        f"<body><main>{header}{results}{footer}</main>"
        f"<script>{assets.library()}</script>"
        f'<script type="module">{assets.suite_module()}</script></body></html>\n'
    )
