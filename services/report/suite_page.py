"""Placeholder of the suite report (suite-view writes the real page: profile plot, score
table, heat map). ``render_suite_report(scores)`` takes the scores document of
``GET /v1/suites/{id}/scores`` and returns a self-contained HTML page: here the score table
and every t(s, w) and r(s, w) as plain tables."""

from __future__ import annotations

from html import escape
from typing import Any


def _number(value: Any) -> str:
    if value is None:
        return "∞"
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def render_suite_report(scores: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{row['rank']}</td><td>{escape(row['optimizer'])}</td>"
        f"<td>{row['score']:.3f}</td><td>{_number(row['geomean_speedup'])}</td>"
        f"<td>{row['solved']}/{row['workloads']}</td></tr>"
        for row in scores["table"]
    )
    cells = "".join(
        f"<tr><td>{escape(c['optimizer'])}</td><td>{escape(c['workload'])}</td>"
        f"<td>{_number(c['t'])}</td><td>{_number(c['r'])}</td></tr>"
        for c in scores["cells"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(scores['name'])}</title></head><body>"
        f"<h1>{escape(scores['name'])}</h1><p>status: {escape(scores['status'])}; time measure: "
        f"{escape(scores['time_measure'])}; reference: {escape(scores['reference'])}</p>"
        "<table id='scores'><tr><th>rank</th><th>optimizer</th><th>score</th>"
        f"<th>geomean speedup</th><th>solved</th></tr>{rows}</table>"
        "<table id='cells'><tr><th>optimizer</th><th>workload</th><th>t</th><th>r</th></tr>"
        f"{cells}</table><p>{escape(scores['definition']['source'])}</p></body></html>"
    )
