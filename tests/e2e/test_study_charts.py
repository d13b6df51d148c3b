"""A tuning study's charts in headless Chromium, on the job page while it runs and after, and
in the saved HTML report: a small study (tests/unit/test_report_page.py's: 2 optimizers x 4
quasirandom trials, halving at epoch 2, an entry whose rates all diverge, 2 rerun seeds)
trained by ``optbench api`` + ``optbench worker`` (tests/e2e/conftest.py).

Checked: the progress line moves through the phases to "done"; the tuneability plot draws a
marker per finished trial (crosses for the diverged ones, a star per optimizer's best) and
hover names a real trial with its value and score; the expected-best curves draw one point
per k; the legend hides an optimizer's trials; the loss charts draw only the reruns and the
baselines. Screenshots go to ``$OPTBENCH_SCREENSHOTS`` (default /tmp/optbench-screenshots).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import by_testid, severe, wait_until
from tests.e2e.test_charts import chart, hover, shoot
from tests.unit.test_report_page import STUDY as REPORT_STUDY

STUDY = {**REPORT_STUDY, "name": "charts: a small study"}  # the report tests' study
PHASES = ("Study searching", "Study rerunning the best settings", "Study done")
READOUT = re.compile(
    r"(?P<label>\S+) trial (?P<trial>\d+) · lr (?P<lr>\S+) · score (?P<score>\S+) · "
    r"(?P<status>completed|pruned at epoch \d+|diverged)"
)


def fmt(value: float | None) -> str:
    """series.js formatValue: four significant digits, exponents outside [1e-3, 1e5)."""
    if value is None:
        return "\u2013"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    return f"{float(f'{value:.4g}'):g}"


def watch_progress(driver: Any, url: str, job_id: str, logs: list[Path]) -> list[str]:
    """Every distinct study progress line the page showed until the job finished."""
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        slots = by_testid(driver, "study-progress")
        text = slots[0].text if slots and slots[0].is_displayed() else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        status = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            assert status == "succeeded", status
            return seen
        time.sleep(0.3)
    pytest.fail(f"study {job_id} did not finish in 240 s")


def check_study_charts(driver: Any, data: dict[str, Any], logs: list[Path]) -> None:
    """The tuneability and expected-best figures draw what the chart data holds."""
    from selenium.webdriver.common.by import By

    figure = wait_until(
        lambda: chart(driver, "tuneability-lr"), 30, "the tuneability plot", logs, driver
    )
    study = data["study"]
    trials = [(e["label"], t) for e in study["entries"] for t in e["trials"]]
    drawn = [
        (label, t) for label, t in trials if t["status"] == "diverged" or t["score"] is not None
    ]
    assert len(drawn) == len(trials) == 10  # every trial finished with a result
    print("trials:", [(label, t["trial"], t["status"], t["score"]) for label, t in trials])
    assert int(figure.get_attribute("data-points")) == len(drawn)
    assert int(figure.get_attribute("data-diverged")) == 2  # sgd.hot's two
    assert int(figure.get_attribute("data-best")) == 2  # sgd's and adam's (sgd.hot has none)
    assert figure.get_attribute("data-x-scale") == "log"
    lo, hi = float(figure.get_attribute("data-x-min")), float(figure.get_attribute("data-x-max"))
    assert lo < 1e-4 and hi > 500  # the whole searched range of every entry

    # Hover names the nearest trial: a real one, with its value and score as stored.
    known = {(label, str(t["trial"])): t for label, t in trials}
    for dx in (-300, -100, 0, 150, 350):
        text = hover(driver, figure, dx)
        found = READOUT.search(text)
        assert found, text
        t = known[(found["label"], found["trial"])]
        assert found["lr"] == fmt(t["values"]["lr"]) and found["score"] == fmt(t["score"])
        assert found["status"].split()[0] == t["status"]

    best = wait_until(
        lambda: chart(driver, "best-of-k"), 10, "the expected-best curves", logs, driver
    )
    curves = [e["expected_best"] for e in study["entries"] if e["expected_best"]]
    assert len(curves) == 2 and int(best.get_attribute("data-points")) == sum(map(len, curves))
    by_label = {e["label"]: e["expected_best"] for e in study["entries"] if e["expected_best"]}
    for dx in (-400, 0, 400):  # the readout: k under the cursor, each curve's value at k
        lines = hover(driver, best, dx).splitlines()
        k = int(lines[0].removeprefix("trials k "))
        values = dict(line.rsplit(" ", 1) for line in lines[1:])
        expected = {label: fmt(c[min(k, len(c)) - 1]) for label, c in by_label.items()}
        assert values == expected and 1 <= k <= max(map(len, curves)), lines

    # The legend hides an optimizer everywhere, its trials too.
    key = driver.find_element(By.CSS_SELECTOR, '.ob-key[data-label="adam"]')
    key.click()
    adam = sum(1 for label, _ in drawn if label == "adam")
    assert int(chart(driver, "tuneability-lr").get_attribute("data-points")) == len(drawn) - adam
    key.click()
    assert int(chart(driver, "tuneability-lr").get_attribute("data-points")) == len(drawn)

    # The loss charts draw the final answer: two reruns per tuned label, baselines beside.
    legend = [
        k.get_attribute("data-label") for k in driver.find_elements(By.CSS_SELECTOR, ".ob-key")
    ]
    assert legend == ["sgd", "sgd:one-shot", "adam", "adam:one-shot", "sgd.hot"]
    loss = chart(driver, "loss-epoch")
    assert "sgd (mean of 2)" in hover(driver, loss) and "sgd:one-shot (mean of 2)" in hover(
        driver, loss
    )
    assert "Tuning study: quasirandom sampler" in by_testid(driver, "chart-study")[0].text


@pytest.fixture(scope="module")
def study(server: tuple[str, list[Path]], browser: Any) -> dict[str, Any]:
    """The study submitted and watched on its job page until it finished."""
    url, logs = server
    job = httpx.post(f"{url}/v1/jobs", json=STUDY, timeout=30).json()
    browser.get(f"{url}/#/jobs/{job['id']}")
    seen = watch_progress(browser, url, str(job["id"]), logs)
    return {"id": str(job["id"]), "seen": seen}


def test_the_job_page_shows_the_studys_progress_and_its_charts(
    server: tuple[str, list[Path]], browser: Any, study: dict[str, Any]
) -> None:
    url, logs = server
    final = wait_until(
        lambda: (t := by_testid(browser, "study-progress")[0].text).startswith("Study done") and t,
        20,
        "the study's final progress line",
        logs,
        browser,
    )
    data = httpx.get(f"{url}/v1/jobs/{study['id']}/charts", timeout=30).json()
    p = data["study"]["progress"]
    assert (p["trials"], p["done"], p["diverged"], p["reruns"]) == (10, 10, 2, 8)
    assert final == (
        f"Study done: search 10 of 10 trials done ({p['pruned']} pruned, 2 diverged); "
        "8 of 8 reruns of the best settings done"
    )
    # The lines the page showed while it ran went forward through the phases.
    order = [next(i for i, p in enumerate(PHASES) if line.startswith(p)) for line in study["seen"]]
    assert order == sorted(order) and order[0] < 2, study["seen"]
    check_study_charts(browser, data, logs)
    print("screenshot:", shoot(browser, "job-page-study"))
    assert severe(browser.get_log("browser")) == []


def test_the_saved_report_draws_the_studys_charts_offline(
    server: tuple[str, list[Path]], browser: Any, study: dict[str, Any], tmp_path: Path
) -> None:
    url, logs = server
    page = httpx.get(f"{url}/v1/jobs/{study['id']}/report", timeout=60).text
    (tmp_path / "study.html").write_text(page, encoding="utf-8")
    browser.get((tmp_path / "study.html").as_uri())
    data = httpx.get(f"{url}/v1/jobs/{study['id']}/charts", timeout=30).json()
    check_study_charts(browser, data, logs)
    print("screenshot:", shoot(browser, "report-study"))
    assert severe(browser.get_log("browser")) == []
