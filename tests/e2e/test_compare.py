"""Jobs side by side in headless Chromium (services/web/js/compare.js, history.js, the list's
checkboxes): two finished jobs picked in the list open the comparison, which shows their
setups (the epochs marked as differing), the summaries aligned by label (a label one job
lacks says so) and every chart with both jobs' curves on the same axes, one dash pattern
per job; a label links to its history across the jobs; the list filters by best optimizer;
the console stays clean."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import by_testid, severe, wait_until

SPEC: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"name": "mlp", "hidden": [16]},
    "batch_size": 16,
    "target": {"metric": "val_accuracy", "value": 0.8},
}
SHOTS = Path(os.environ.get("OPTBENCH_SCREENSHOTS", "/tmp/optbench-screenshots"))
FIRST = {
    **SPEC,
    "name": "compare: sgd and adam",
    "epochs": 4,
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}],
}
SECOND = {
    **SPEC,
    "name": "compare: adam and momentum",
    "epochs": 6,
    "optimizers": [{"name": "adam", "lr": 0.01}, {"name": "momentum", "lr": 0.05}],
}


def finished(url: str, spec: dict[str, Any]) -> str:
    job = httpx.post(f"{url}/v1/jobs", json=spec, timeout=30).json()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            assert status == "succeeded", status
            return str(job["id"])
        time.sleep(0.5)
    pytest.fail(f"job {job['id']} did not finish in 240 s")


def test_pick_two_jobs_in_the_list_and_compare_their_curves(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    url, logs = server
    driver = browser
    first, second = finished(url, FIRST), finished(url, SECOND)

    driver.get(f"{url}/")
    wait_until(lambda: len(by_testid(driver, "job-row")) >= 2, 20, "the list", logs, driver)
    button = by_testid(driver, "compare-picked")[0]
    assert not button.is_enabled()
    for job_id in (first, second):  # picked in this order: the columns' order
        row = driver.find_element(
            "css selector", f'[data-testid="job-row"][data-job-id="{job_id}"]'
        )
        by_testid(driver, "job-pick", row)[0].click()
    assert button.is_enabled() and button.text == "Compare (2)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "compare-list.png"))
    button.click()

    wait_until(lambda: "#/compare?jobs=" in driver.current_url, 10, "the comparison", logs, driver)
    assert driver.current_url.endswith(f"jobs={first},{second}")
    ready = wait_until(
        lambda: driver.execute_script(
            "const b = document.querySelector('[data-testid=compare-charts]');"
            "return b && b.dataset.chartsReady === 'true';"
        ),
        30,
        "the comparison's charts",
        logs,
        driver,
    )
    assert ready
    driver.save_screenshot(str(SHOTS / "compare.png"))

    # The setups: epochs differ (4 and 6), and only they are marked.
    setup = by_testid(driver, "compare-setup")[0]
    assert "Setups differ in: epochs" in setup.text
    marked = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=compare-setup] td.differs')]"
        ".map((td) => td.dataset.key + ':' + td.textContent);"
    )
    assert marked == ["epochs:4", "epochs:6"], marked
    job_dashes = [cell.get_attribute("data-dash") for cell in by_testid(driver, "job-dash")]
    assert len(job_dashes) == 2 and job_dashes[0] != job_dashes[1], job_dashes

    # The aligned table: the union of labels; momentum is not in the first job, sgd not in
    # the second.
    rows = by_testid(driver, "compare-row")
    assert [row.get_attribute("data-label") for row in rows] == ["sgd", "adam", "momentum"]
    absent = {
        (row.get_attribute("data-label"), cell.get_attribute("data-job"))
        for row in rows
        for cell in by_testid(driver, "absent", row)
    }
    assert absent == {("sgd", second), ("momentum", first)}

    # Every chart: both jobs' curves on one set of axes, one dash pattern per job, distinct.
    figures = by_testid(driver, "compare-chart")
    assert [f.get_attribute("data-chart") for f in figures] == [
        "loss-epoch",
        "val-epoch",
        "loss-step",
    ]
    for figure in figures:
        drawn = json.loads(figure.get_attribute("data-series"))
        assert len(figure.find_elements("css selector", "canvas")) >= 1
        by_job: dict[str, set[str]] = {}
        for line in drawn:
            by_job.setdefault(line["job"], set()).add(line["dash"])
        assert set(by_job) == {first, second}, drawn
        assert all(len(dashes) == 1 for dashes in by_job.values()), by_job
        assert by_job[first] != by_job[second], by_job
        assert sorted(line["label"] for line in drawn) == ["adam", "adam", "momentum", "sgd"]
        assert [by_job[first].pop(), by_job[second].pop()] == job_dashes

    # A label leads to its history over the jobs on iris: adam in both.
    adam = next(row for row in rows if row.get_attribute("data-label") == "adam")
    by_testid(driver, "history-link", adam)[0].click()
    wait_until(lambda: by_testid(driver, "history-row"), 15, "adam's history", logs, driver)
    history = by_testid(driver, "history-row")
    assert [row.get_attribute("data-job-id") for row in history] == [second, first]
    assert "2 succeeded jobs" in by_testid(driver, "history-headline")[0].text
    assert len(by_testid(driver, "history-rank")) == 2
    assert by_testid(driver, "history-aggregate")
    driver.save_screenshot(str(SHOTS / "history.png"))
    # Narrowed to another model: none of the jobs (both are MLPs), and the URL says so.
    from selenium.webdriver.support.ui import Select

    wait_until(
        lambda: driver.find_elements(
            "css selector", '[data-testid="history-model"] option[value="linear"]'
        ),
        15,
        "the catalog's models",
        logs,
        driver,
    )
    Select(by_testid(driver, "history-model")[0]).select_by_value("linear")
    wait_until(lambda: by_testid(driver, "history-empty"), 15, "the narrowed history", logs, driver)
    assert driver.current_url.endswith("#/history/adam?dataset=iris&model=linear")

    # The job page's summary links its labels to the same history.
    driver.get(f"{url}/#/jobs/{first}")
    links = wait_until(lambda: by_testid(driver, "history-link"), 20, "the summary", logs, driver)
    assert links[0].get_attribute("href").endswith("#/history/sgd?dataset=iris")

    # The list filters by best optimizer (the summary's rank-1 label of a finished job).
    best = {
        job_id: httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["best_label"]
        for job_id in (first, second)
    }
    driver.get(f"{url}/")
    box = wait_until(lambda: by_testid(driver, "best-filter"), 15, "the list", logs, driver)[0]
    box.send_keys(best[first])
    expected = {job_id for job_id, label in best.items() if label == best[first]}
    wait_until(
        lambda: {r.get_attribute("data-job-id") for r in by_testid(driver, "job-row")} == expected,
        15,
        "the best-optimizer filter",
        logs,
        driver,
    )
    assert f"best={best[first]}" in driver.current_url

    errors = severe(driver.get_log("browser"))
    assert errors == [], errors
