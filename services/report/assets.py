"""The chart code the report inlines: the vendored uPlot and the page's own chart modules
(services/web/), read from the package once, so the report and the web page run one
implementation and the report stays one self-contained offline file."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
# The chart modules in dependency order; inlined into one module, their imports go.
MODULES = ("js/series.js", "js/chart_dom.js", "js/charts.js")
_IMPORT = re.compile(r"^import\s[^;]*;\s*$", re.MULTILINE)
_BOOT = """
const chartData = JSON.parse(document.getElementById("ob-chart-data").textContent);
mountJobCharts(document.getElementById("ob-charts"), chartData);
"""
# A suite's report (services/report/suite_page.py): series.js for the palette and dashes,
# then the suite's modules; its boot mounts them on the embedded scores.
SUITE_MODULES = ("js/series.js", "js/chart_dom.js", "js/suite_series.js", "js/suite_charts.js")
_SUITE_BOOT = """
const suiteScores = JSON.parse(document.getElementById("ob-suite-data").textContent);
mountSuiteCharts(document.getElementById("ob-suite"), suiteScores);
"""


def _read(name: str) -> str:
    return (WEB_DIR / name).read_text(encoding="utf-8")


@functools.cache
def library() -> str:
    """uPlot itself: a classic script defining the global ``uPlot``."""
    return _read("vendor/uPlot.iife.min.js")


@functools.cache
def module() -> str:
    """series.js and charts.js as one inline module (imports removed), then the boot code
    that mounts the charts on the embedded data."""
    return _inline(MODULES, _BOOT)


def _inline(names: tuple[str, ...], boot: str) -> str:
    return "\n".join(_IMPORT.sub("", _read(name)) for name in names) + boot


@functools.cache
def suite_module() -> str:
    """series.js and the suite's modules as one inline module, then the boot code that
    mounts them on the embedded scores."""
    return _inline(SUITE_MODULES, _SUITE_BOOT)


@functools.cache
def styles() -> str:
    return _read("vendor/uPlot.min.css") + "\n" + _read("charts.css")


@functools.cache
def suite_styles() -> str:
    return styles() + "\n" + _read("suite_charts.css")


def script_hash(source: str) -> str:
    """A CSP source allowing exactly this inline script."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def csp() -> str:
    """The report's Content-Security-Policy: its two inline scripts and nothing else run,
    nothing is fetched; images only from data: and blob: (the PNG downloads)."""
    return _csp(library(), module())


def suite_csp() -> str:
    """The suite report's Content-Security-Policy: as the job report's, for its own two
    inline scripts (uPlot and the suite module). Its links to job reports are navigations,
    which ``default-src`` does not govern."""
    return _csp(library(), suite_module())


def _csp(*inline_scripts: str) -> str:
    scripts = " ".join(script_hash(s) for s in inline_scripts)
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; "
        "img-src data: blob:; base-uri 'none'; form-action 'none'"
    )
