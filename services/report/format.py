"""Formatting of values for the page: numbers, times, JSON, the version, the target."""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from importlib import metadata
from typing import Any


def esc(text: Any) -> str:
    """Text for HTML content and attribute values (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def _num(value: Any, kind: str = "g") -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if not math.isfinite(value):
        return esc(value)
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    if kind == "s":
        return f"{value:.3g} s"
    if kind == "r2":
        return f"{value:.4f}"
    if kind == "g2":
        return f"{value:.2g}"
    return f"{value:.4g}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "&ndash;"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def _version() -> str:
    try:
        return metadata.version("optbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def _target_text(target: dict[str, Any]) -> str:
    metric = str(target.get("metric", "?"))
    direction = "≥" if metric.endswith(("accuracy", "r2")) else "≤"
    return f"{metric} {direction} {target.get('value')}"
