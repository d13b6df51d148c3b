"""The charts in headless Chromium, on the job page and in the saved HTML report: the
lecture's eight optimizers with three seeds, and the Rosenbrock job (examples/rosenbrock.json,
fewer epochs), trained by ``optbench api`` + ``optbench worker`` processes
(tests/e2e/conftest.py).

Checked as a user would use them: hovering a chart shows values, a drag zooms the x range,
the x-axis switch changes the axis, the seeds toggle and the legend change what is drawn,
the landscape draws its contour and one path per run, and the console stays clean. The
test writes screenshots of each view to ``$OPTBENCH_SCREENSHOTS`` (default
/tmp/optbench-screenshots) for people to look at.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.spec import LECTURE_SPEC
from tests.e2e.helpers import by_testid, severe, wait_until

SHOTS = Path(os.environ.get("OPTBENCH_SCREENSHOTS", "/tmp/optbench-screenshots"))
LECTURE = {**LECTURE_SPEC, "name": "charts: lecture, three seeds", "epochs": 2, "seeds": [0, 1, 2]}
ROSENBROCK = {
    **json.loads((Path(__file__).parents[2] / "examples" / "rosenbrock.json").read_text()),
    "name": "charts: rosenbrock",
    "epochs": 150,
}
LABELS = [entry.get("label") or entry["name"] for entry in LECTURE_SPEC["optimizers"]]


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


@pytest.fixture(scope="module")
def jobs(server: tuple[str, list[Path]]) -> dict[str, str]:
    url, _ = server
    return {"lecture": finished(url, LECTURE), "rosenbrock": finished(url, ROSENBROCK)}


def chart(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'figure[data-chart="{name}"]')
    return found[0] if found and found[0].find_elements(By.CSS_SELECTOR, ".u-over") else None


def over(figure: Any) -> Any:
    from selenium.webdriver.common.by import By

    return figure.find_element(By.CSS_SELECTOR, ".u-over")


def hover(driver: Any, figure: Any, dx: int = 0) -> str:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element_with_offset(over(figure), dx, 0).perform()
    time.sleep(0.2)
    return str(by_testid(driver, "readout", figure)[0].text)


def drag(driver: Any, figure: Any, start: int, end: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    (
        ActionChains(driver)
        .move_to_element_with_offset(over(figure), start, 0)
        .click_and_hold()
        .move_by_offset(end - start, 0)
        .release()
        .perform()
    )
    time.sleep(0.3)


def shoot(driver: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 100, 8000))
    time.sleep(0.3)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 2200)
    return path


def check_series_charts(driver: Any, logs: list[Path]) -> None:
    """Hover, drag-zoom, x-axis switch, seeds toggle and legend on the loss-per-step chart."""
    from selenium.webdriver.support.ui import Select

    figure = wait_until(lambda: chart(driver, "loss-step"), 30, "the loss chart", logs, driver)
    for name in ("loss-epoch", "val-epoch", "steps-to-target", "seconds-to-target"):
        assert chart(driver, name) is not None, name

    text = hover(driver, figure)
    assert text.startswith("epoch ") and any(c.isdigit() for c in text.split("epoch ", 1)[1])
    assert "adam (mean of 3)" in text  # every optimizer's value at the cursor

    before = float(figure.get_attribute("data-x-min")), float(figure.get_attribute("data-x-max"))
    drag(driver, figure, -150, 150)
    after = float(figure.get_attribute("data-x-min")), float(figure.get_attribute("data-x-max"))
    assert before[0] < after[0] < after[1] < before[1], (before, after)

    Select(by_testid(driver, "chart-x")[0]).select_by_value("seconds")
    figure = wait_until(
        lambda: (f := chart(driver, "loss-step"))
        and f.get_attribute("data-x-label") == "training seconds"
        and f,
        10,
        "the x axis in training seconds",
        logs,
        driver,
    )
    assert chart(driver, "val-epoch").get_attribute("data-x-label") == "training seconds"
    assert hover(driver, figure).startswith("training seconds ")

    Select(by_testid(driver, "chart-seeds")[0]).select_by_value("each")
    figure = wait_until(lambda: chart(driver, "loss-step"), 10, "each run drawn", logs, driver)
    assert "adam seed 2" in hover(driver, figure)
    Select(by_testid(driver, "chart-seeds")[0]).select_by_value("mean")

    from selenium.webdriver.common.by import By

    key = driver.find_element(By.CSS_SELECTOR, '.ob-key[data-label="adam"]')
    key.click()
    assert key.get_attribute("aria-pressed") == "false"
    figure = chart(driver, "loss-step")
    assert "adam" not in hover(driver, figure) and "sgd" in hover(driver, figure)
    key.click()
    Select(by_testid(driver, "chart-x")[0]).select_by_value("epoch")


def check_contour(driver: Any, logs: list[Path]) -> None:
    figure = wait_until(lambda: chart(driver, "contour"), 30, "the contour", logs, driver)
    assert int(figure.get_attribute("data-levels")) >= 10
    assert figure.get_attribute("data-paths") == "8"  # one path per optimizer's run
    assert chart(driver, "distance-epoch") is not None and chart(driver, "loss-step") is not None
    assert chart(driver, "val-epoch") is None  # no validation split on a landscape
    assert hover(driver, figure).startswith("(")  # the cursor's (x, y)


def test_the_job_pages_charts_answer_hover_zoom_and_the_switches(
    server: tuple[str, list[Path]], browser: Any, jobs: dict[str, str]
) -> None:
    url, logs = server
    browser.get(f"{url}/#/jobs/{jobs['lecture']}")
    check_series_charts(browser, logs)
    print("screenshot:", shoot(browser, "job-page-lecture"))
    browser.get(f"{url}/#/jobs/{jobs['rosenbrock']}")
    check_contour(browser, logs)
    print("screenshot:", shoot(browser, "job-page-rosenbrock"))
    assert severe(browser.get_log("browser")) == []


def test_the_saved_report_draws_the_same_charts_offline(
    server: tuple[str, list[Path]], browser: Any, jobs: dict[str, str], tmp_path: Path
) -> None:
    url, logs = server
    for name in ("lecture", "rosenbrock"):
        page = httpx.get(f"{url}/v1/jobs/{jobs[name]}/report", timeout=60).text
        (tmp_path / f"{name}.html").write_text(page, encoding="utf-8")
    browser.get((tmp_path / "lecture.html").as_uri())
    check_series_charts(browser, logs)
    print("screenshot:", shoot(browser, "report-lecture"))
    browser.get((tmp_path / "rosenbrock.html").as_uri())
    check_contour(browser, logs)
    print("screenshot:", shoot(browser, "report-rosenbrock"))
    assert severe(browser.get_log("browser")) == []
