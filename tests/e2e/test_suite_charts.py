"""A suite's results in headless Chromium: the suite's HTML report, saved and opened offline,
on planted scores (tests/suite_scores.py); and the web page's suite views (the list, one
suite while it runs and once done, the form's lecture-suite button).

Checked as a reader would look: the performance profile's canvas holds a line in each
optimizer's colour (and loses it when its legend key is clicked), hovering reads rho at tau; the
heat map has one cell per (optimizer, workload) with misses and a workload nobody solved
marked, t in each cell's title, and each workload's header links its jobs' reports; the
score table is ranked; the console stays clean. Screenshots go to ``$OPTBENCH_SCREENSHOTS``
(default /tmp/optbench-screenshots).

The web page's part runs against ``suite_site``: the real API and worker with SMALL_SUITE
submitted (``real_suite_site``); ``stub_suite_site`` (tests/e2e/suite_stub.py, planted
responses whose running phase is deterministic) is kept for working on the view alone. The
checks read what the site serves, so they hold for either.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.report.suite_page import render_suite_report
from tests import suite_scores
from tests.e2e.helpers import by_testid, severe, wait_until
from tests.e2e.suite_stub import StubState, stub_server
from tests.e2e.test_charts import shoot

SUITE_BACKEND = "real_suite_site"
FINISHED = ("succeeded", "failed", "cancelled")

# For the real backend: a suite small enough for a test (services/spec/suite.py).
SMALL_SUITE = {
    "name": "e2e: a small suite",
    "workloads": [
        {"name": "moons-mlp", "dataset": {"name": "moons"},
         "model": {"name": "mlp", "hidden": [16]}, "batch_size": 32, "epochs": 3,
         "target": {"metric": "val_accuracy", "value": 0.85}},
        {"name": "wine-linear", "dataset": {"name": "wine"}, "model": {"name": "linear"},
         "batch_size": 32, "epochs": 3, "target": {"metric": "val_accuracy", "value": 0.9}},
    ],
    "optimizers": [
        {"name": "sgd", "lr": 0.1, "search": {"lr": {"log_uniform": [0.01, 1.0]}}},
        {"name": "adam", "lr": 0.01, "search": {"lr": {"log_uniform": [0.001, 0.1]}}},
    ],
    "tuning": {"trials": 2, "sampler": "quasirandom", "rerun_seeds": 1, "baseline": False},
    "studies": 1,
}  # fmt: skip


@dataclass
class SuiteSite:
    """Where the suite views are tested: the base URL, a suite it has, the logs to show on
    failure, and what the form posted (the stub records it; None on the real backend)."""

    url: str
    suite_id: str
    logs: list[Path]
    stub: StubState | None = None


@pytest.fixture(scope="module")
def stub_suite_site() -> Iterator[SuiteSite]:
    with stub_server(running_polls=3) as (url, state):
        yield SuiteSite(url=url, suite_id=state.suite_id, logs=[], stub=state)


@pytest.fixture(scope="module")
def real_suite_site(server: tuple[str, list[Path]]) -> SuiteSite:
    """The real API and worker (tests/e2e/conftest.py) with SMALL_SUITE submitted."""
    url, logs = server
    response = httpx.post(f"{url}/v1/suites", json=SMALL_SUITE, timeout=60)
    assert response.status_code in (200, 201, 202), response.text
    return SuiteSite(url=url, suite_id=str(response.json()["id"]), logs=logs)


@pytest.fixture(scope="module")
def suite_site(request: pytest.FixtureRequest) -> SuiteSite:
    return request.getfixturevalue(SUITE_BACKEND)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- what is on the screen


def css(driver: Any, selector: str, within: Any = None) -> list[Any]:
    from selenium.webdriver.common.by import By

    return (within or driver).find_elements(By.CSS_SELECTOR, selector)


def format_ratio(r: float | None) -> str:
    """suite_series.js formatRatio: three significant digits, ∞ for a miss."""
    return "∞" if r is None else f"{float(f'{r:.3g}'):g}"


def colour_pixels(driver: Any, colours: list[str]) -> list[int]:
    """Pixels of the profile's canvas within a few levels of each colour."""
    script = """
    const canvas = document.querySelector('figure[data-chart="profile"] canvas');
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    return arguments[0].map((hex) => {
      const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      let n = 0;
      for (let p = 0; p < data.length; p += 4) {
        const near = [0, 1, 2].every((k) => Math.abs(data[p + k] - want[k]) < 12);
        if (data[p + 3] > 200 && near) n++;
      }
      return n;
    });
    """
    return list(driver.execute_script(script, colours))


def rho_at(tau_grid: list[float], rho: list[float], tau: float) -> float | None:
    value = None
    for t, v in zip(tau_grid, rho, strict=True):
        if t <= tau * (1 + 1e-12):
            value = v
    return value


def check_profile(driver: Any, scores: dict[str, Any], logs: list[Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    labels = scores["optimizers"]
    figure = wait_until(
        lambda: (f := css(driver, 'figure[data-chart="profile"]'))
        and css(driver, ".u-over", f[0])
        and f[0],
        30, "the profile plot", logs, driver,
    )  # fmt: skip
    assert figure.get_attribute("data-series") == str(len(labels))
    assert figure.get_attribute("data-x-scale") == "log"
    assert float(figure.get_attribute("data-x-min")) == 1
    assert float(figure.get_attribute("data-x-max")) == scores["r_max"]
    colours = [
        css(driver, f'.ob-key[data-label="{label}"] line', figure)[0].get_attribute("stroke")
        for label in labels
    ]
    assert len(set(colours)) == len(labels)
    drawn = colour_pixels(driver, colours)
    assert all(n > 30 for n in drawn), dict(zip(labels, drawn, strict=True))
    # the legend hides a line, and shows it again
    key = css(driver, f'.ob-key[data-label="{labels[0]}"]', figure)[0]
    key.click()
    assert key.get_attribute("aria-pressed") == "false"
    assert colour_pixels(driver, colours[:1])[0] < 5
    key.click()
    assert colour_pixels(driver, colours[:1])[0] > 30

    # hover near tau = 1.2: rho of every optimizer there, as a share and as workloads
    over = css(driver, ".u-over", figure)[0]
    width = over.size["width"]
    dx = int(width * math.log(1.2) / math.log(scores["r_max"]) - width / 2)
    ActionChains(driver).move_to_element_with_offset(over, dx, 0).perform()
    time.sleep(0.2)
    text = by_testid(driver, "readout", figure)[0].text
    found = re.match(r"τ (\S+)", text)
    assert found, text
    tau = float(found.group(1))
    n = len(scores["workloads"])
    grid = scores["profile"]["tau"]
    jumps = {t for t in grid}
    for label in labels:
        assert f"{label} " in text and f"of {n} workloads" in text, text
        if any(abs(j - tau) < 0.01 * tau for j in jumps if j > 1):
            continue  # the shown τ is rounded: too near a jump to know the side
        rho = rho_at(grid, scores["profile"]["rho"][label], tau)
        assert rho is not None
        assert f"{label} {float(f'{rho:.3f}'):g} ({round(rho * n)} of {n} workloads)" in text, text


def check_heat_map(driver: Any, scores: dict[str, Any], page: bool) -> None:
    heat = by_testid(driver, "suite-heatmap")[0]
    cells = by_testid(driver, "heat-cell", heat)
    got = {(c.get_attribute("data-optimizer"), c.get_attribute("data-workload")): c for c in cells}
    workloads = [w["name"] for w in scores["workloads"]]
    assert len(cells) == len(got) == len(scores["optimizers"]) * len(workloads)
    assert set(got) == {(o, w) for o in scores["optimizers"] for w in workloads}
    misses = 0
    for planted in scores["cells"]:
        cell = got[(planted["optimizer"], planted["workload"])]
        state = cell.get_attribute("data-state")
        title = cell.get_attribute("title")
        if planted["r"] is None:
            misses += 1
            assert state in ("miss", "unsolved") and cell.text == "miss", (planted, state)
            assert "t = ∞" in title
        else:
            assert state in ("best", "solved", "beyond") and cell.text == format_ratio(planted["r"])
            assert f"r = {format_ratio(planted['r'])}" in title and "t = " in title
    assert misses == sum(1 for c in scores["cells"] if c["r"] is None) > 0
    for header in by_testid(driver, "heat-workload", heat):
        name = header.get_attribute("data-workload")
        workload = next(w for w in scores["workloads"] if w["name"] == name)
        solved = any(c["t"] is not None for c in scores["cells"] if c["workload"] == name)
        assert header.get_attribute("data-solved") == str(solved).lower()
        assert bool(by_testid(driver, "unsolved-mark", header)) == (not solved)
        reports = [a.get_attribute("href") for a in by_testid(driver, "workload-report", header)]
        expected = [f"/v1/jobs/{job['job_id']}/report" for job in workload["jobs"]]
        assert [re.sub(r"^\w+://[^/]*", "", h) for h in reports] == expected
        if page:  # the page links each job's own view too (its summary)
            jobs = [a.get_attribute("href") for a in by_testid(driver, "workload-job", header)]
            assert [h.split("#", 1)[1] for h in jobs] == [
                f"/jobs/{j['job_id']}" for j in workload["jobs"]
            ]


def check_table(driver: Any, scores: dict[str, Any]) -> None:
    rows = by_testid(driver, "score-row")
    ranks = [int(r.get_attribute("data-rank")) for r in rows]
    shown = [r.get_attribute("data-optimizer") for r in rows]
    assert ranks == sorted(ranks) and len(rows) == len(scores["table"])
    best_first = sorted(
        scores["table"], key=lambda r: (r["rank"], scores["optimizers"].index(r["optimizer"]))
    )
    assert shown == [r["optimizer"] for r in best_first]
    scores_shown = [float(r.get_attribute("data-score")) for r in rows]
    assert scores_shown == sorted(scores_shown, reverse=True)
    first = rows[0].text.split()
    assert first[:3] == ["1", best_first[0]["optimizer"], f"{best_first[0]['score']:.3f}"]


def check_suite(driver: Any, scores: dict[str, Any], logs: list[Path], page: bool) -> None:
    check_profile(driver, scores, logs)
    check_heat_map(driver, scores, page)
    check_table(driver, scores)
    definition = by_testid(driver, "suite-definition")[0].text
    assert (scores["definition"]["source"] in definition) and "r_max" in definition
    assert "a miss is infinite" in definition


# ---------------------------------------------------------------- the report


def test_the_saved_suite_report_draws_profile_heat_map_and_ranked_table_offline(
    browser: Any, tmp_path: Path
) -> None:
    scores = suite_scores.succeeded()
    random.Random(7).shuffle(scores["table"])  # the view ranks it, whatever the order
    path = tmp_path / "suite.html"
    path.write_text(render_suite_report(scores), encoding="utf-8")
    browser.get(path.as_uri())
    wait_until(
        lambda: css(browser, "#ob-suite[data-suite-ready]"), 30, "the suite module", [], browser
    )
    check_suite(browser, scores, [], page=False)
    print("screenshot:", shoot(browser, "suite-report"))
    assert severe(browser.get_log("browser")) == []


def test_a_suite_report_before_anything_trained_says_so_and_raises_nothing(
    browser: Any, tmp_path: Path
) -> None:
    scores = suite_scores.queued()
    path = tmp_path / "queued.html"
    path.write_text(render_suite_report(scores), encoding="utf-8")
    browser.get(path.as_uri())
    wait_until(
        lambda: css(browser, "#ob-suite[data-suite-ready]"), 30, "the suite module", [], browser
    )
    assert by_testid(browser, "suite-progress")[0].text.startswith(
        "Suite queued: 0 of 10 jobs done (5 workloads)"
    )
    figure = css(browser, 'figure[data-chart="profile"]')[0]
    assert figure.get_attribute("data-series") == "0"
    assert "Drawn once a workload has finished." in figure.text
    assert by_testid(browser, "unsolved-mark") == []  # nothing finished: nobody failed yet
    states = {c.get_attribute("data-state") for c in by_testid(browser, "heat-cell")}
    assert states == {"pending"} and len(by_testid(browser, "heat-cell")) == 20
    assert by_testid(browser, "score-row") == []
    assert severe(browser.get_log("browser")) == []


# ---------------------------------------------------------------- the web page


def test_the_suites_page_lists_a_suite_and_shows_its_progress_then_its_results(
    browser: Any, suite_site: SuiteSite
) -> None:
    url, logs = suite_site.url, suite_site.logs
    browser.get(f"{url}/#/suites")
    row = wait_until(
        lambda: [
            r
            for r in by_testid(browser, "suite-row")
            if r.get_attribute("data-suite-id") == suite_site.suite_id
        ],
        30, "the suite in the list", logs, browser,
    )[0]  # fmt: skip
    assert re.fullmatch(r"\d+ / \d+|—", by_testid(browser, "suite-jobs", row)[0].text)
    by_testid(browser, "suite-link", row)[0].click()
    wait_until(
        lambda: browser.current_url.endswith(f"#/suites/{suite_site.suite_id}"),
        10,
        "the suite's page",
        logs,
        browser,
    )
    seen: list[str] = []
    pending = 0  # the most cells shown as still training at once
    deadline = time.monotonic() + (600 if suite_site.stub is None else 60)
    while time.monotonic() < deadline:
        texts = by_testid(browser, "suite-progress-text")
        text = texts[0].text if texts else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        pending = max(pending, len(css(browser, '[data-state="pending"]')))
        status = browser.find_element("css selector", "main").get_attribute("data-suite-status")
        if status in FINISHED:
            break
        time.sleep(0.2)
    assert status == "succeeded", (status, seen)
    assert all(re.fullmatch(r"\d+ of \d+ jobs done \(\d+ workloads?\).*", t) for t in seen), seen
    if suite_site.stub is not None:  # the planted run: 6 of 10 done, then all
        assert (
            seen[0] == "6 of 10 jobs done (5 workloads)"
            and seen[-1] == "10 of 10 jobs done (5 workloads)"
        )
        # while it ran: the running workloads' cells were pending, not misses
        assert pending == len(suite_scores.RUNNING_WORKLOADS) * len(suite_scores.OPTIMIZERS)
    scores = httpx.get(f"{url}/v1/suites/{suite_site.suite_id}/scores", timeout=30).json()
    wait_until(
        lambda: by_testid(browser, "heat-cell") and not css(browser, '[data-state="pending"]'),
        10,
        "final cells",
        logs,
        browser,
    )
    check_suite(browser, scores, logs, page=True)
    assert (
        by_testid(browser, "suite-report-link")[0]
        .get_attribute("href")
        .endswith(f"/v1/suites/{suite_site.suite_id}/report")
    )
    print("screenshot:", shoot(browser, "suite-page"))
    assert severe(browser.get_log("browser")) == []


def test_the_form_offers_the_lecture_suite_and_opens_it(
    browser: Any, suite_site: SuiteSite
) -> None:
    url, logs = suite_site.url, suite_site.logs
    browser.get(f"{url}/#/new")
    button = wait_until(
        lambda: by_testid(browser, "submit-lecture-suite"), 10, "the suite button", logs, browser
    )[0]
    button.click()
    wait_until(
        lambda: re.search(r"#/suites/[0-9a-f-]{36}$", browser.current_url),
        20,
        "the new suite's page",
        logs,
        browser,
    )
    if suite_site.stub is not None:
        assert suite_site.stub.posted == [{"preset": "lecture"}]
    else:  # the real API made the built-in suite
        from services.spec.suite import LECTURE_SUITE

        suite_id = browser.current_url.rsplit("/", 1)[1]
        made = httpx.get(f"{url}/v1/suites/{suite_id}", timeout=30).json()
        assert made["name"] == LECTURE_SUITE["name"], made
    wait_until(
        lambda: (
            by_testid(browser, "suite-progress-text")
            and by_testid(browser, "suite-progress-text")[0].text
        ),
        20,
        "the progress line",
        logs,
        browser,
    )
    assert severe(browser.get_log("browser")) == []
    if suite_site.stub is None:  # the whole built-in suite is not this test's to train
        suite_id = browser.current_url.rsplit("/", 1)[1]
        httpx.post(f"{url}/v1/suites/{suite_id}/cancel", timeout=30)
