"""The suite's HTML report (services/report/suite_page.py) on planted scores documents
(tests/suite_scores.py): one self-contained page that embeds the scores as they came, runs
exactly its two inline scripts (its CSP's hashes, in the page and for the route), links each
workload to its jobs' reports and shows the numbers without scripts too. What the browser
draws from it is tested in headless Chromium (tests/e2e/test_suite_charts.py)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

from services.report import assets
from services.report.suite_page import render_suite_report, suite_csp
from tests import suite_scores
from tests.support import unavailable
from tests.unit.test_report_page import HOSTILE, _Balance

JOB_REPORT = re.compile(r'href="/v1/jobs/([0-9a-f-]{36})/report"')


def parse(page: str) -> _Balance:
    """Balanced HTML whose only links are job reports, and nothing loaded from anywhere."""
    assert page.startswith("<!DOCTYPE html>")
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    assert not re.search(r"""\bsrc\s*=""", page)
    hrefs = re.findall(r"""\bhref\s*=\s*["']([^"']*)""", page)
    assert hrefs and all(JOB_REPORT.fullmatch(f'href="{h}"') for h in hrefs), hrefs
    assert "@import" not in page and "url(http" not in page
    module = next(text for kind, text in checker.scripts if kind == "module")
    assert "fetch(" not in module and "XMLHttpRequest" not in module
    return checker


def embedded(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="ob-suite-data">(.*?)</script>', page)
    assert found is not None
    return json.loads(found.group(1))


def test_the_report_embeds_the_scores_as_they_came() -> None:
    scores = suite_scores.succeeded()
    page = render_suite_report(scores)
    parse(page)
    assert embedded(page) == scores
    assert "<title>optbench suite report: lecture suite</title>" in page
    assert "5 workloads · 4 optimizers · time measure: optimizer steps · r_max 4.0" in page


def test_the_csp_allows_exactly_the_two_inline_scripts_that_run() -> None:
    page = render_suite_report(suite_scores.succeeded())
    parsed = parse(page)
    assert [kind for kind, _ in parsed.scripts] == ["application/json", None, "module"]
    running = {assets.script_hash(t) for kind, t in parsed.scripts if kind != "application/json"}
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert meta is not None and html.unescape(meta.group(1)) == suite_csp()
    allowed = set(re.findall(r"'sha256-[^']+'", suite_csp()))
    assert allowed == running and len(allowed) == 2
    policy = suite_csp()
    assert "default-src 'none'" in policy and "connect-src" not in policy
    assert "unsafe-inline" not in policy.split("style-src")[0]
    # the job report's policy is its own (charts.js), unchanged by the suite's
    assert assets.csp() != policy and assets.script_hash(assets.module()) in assets.csp()


def test_each_workload_links_to_its_jobs_reports() -> None:
    scores = suite_scores.succeeded()
    page = render_suite_report(scores)
    linked = JOB_REPORT.findall(page)
    expected = [job["job_id"] for w in scores["workloads"] for job in w["jobs"]]
    assert linked == expected and len(set(linked)) == 10
    # and the script builds the same links (defaultJobLinks): it is inlined as written
    assert "href: `/v1/jobs/${job.job_id}/report`" in assets.suite_module()


def test_without_scripts_the_numbers_are_in_plain_tables() -> None:
    scores = suite_scores.succeeded()
    page = render_suite_report(scores)
    fallback = page[page.index("<noscript>") : page.index("</noscript>")]
    ranks = re.findall(r"<tr><td>(\d)</td><td class=text>(\w+)</td><td>([\d.]+)</td>", fallback)
    assert ranks == [
        ("1", "momentum", "0.733"),
        ("2", "sgd", "0.467"),
        ("3", "adam", "0.4"),
        ("4", "gd", "0.156"),
    ]
    adam = re.search(r"<tr><th class=text>adam</th>(.*?)</tr>", fallback)
    assert adam is not None
    assert re.findall(r"<td>([^<]*)</td>", adam.group(1)) == ["miss", "1", "1", "miss", "miss"]


def test_a_hostile_name_cannot_break_out_and_a_running_suite_says_so() -> None:
    scores = {**suite_scores.running(), "name": HOSTILE}
    scores["optimizers"] = [*scores["optimizers"]]
    page = render_suite_report(scores)
    parse(page)
    assert embedded(page)["name"] == HOSTILE
    assert "<script>alert" not in page
    assert "still running: the scores are over the jobs finished so far" in page


def test_the_inlined_suite_module_is_valid_javascript_beside_the_job_charts() -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs): it checks the inline module")
    # Alone (the suite report), and with charts.js in one scope: no top-level name clashes,
    # so a page that inlines both still parses.
    together = "\n".join(
        assets._IMPORT.sub("", assets._read(name))
        for name in (
            "js/series.js",
            "js/chart_dom.js",
            "js/charts.js",
            "js/suite_series.js",
            "js/suite_charts.js",
        )
    )
    for source in (assets.suite_module(), together):
        result = subprocess.run(
            [node, "--input-type=module", "--check"],
            input=source,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert not [line for line in assets.suite_module().splitlines() if line.startswith("import ")]
