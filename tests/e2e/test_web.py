"""The web page in headless Chromium, against ``optbench api`` and ``optbench worker``
processes on the embedded default (SQLite + filesystem broker in a temporary home).

Open ``/``, go to the form, load the lecture preset, submit it, watch the job page until the
job has succeeded, then check the curves, the legend and the summary table show all eight
optimizers, the report link, and that the browser console logged no error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.helpers import SCREENSHOT, by_testid, severe, wait_until
from tests.support import local_client

LABELS = ["gd", "sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"]


def test_submit_the_lecture_preset_and_watch_it_finish(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    from selenium.webdriver.common.by import By

    url, logs = server
    driver = browser

    driver.get(f"{url}/")
    wait_until(lambda: by_testid(driver, "jobs-count"), 15, "the job list", logs, driver)
    assert driver.title.endswith("optbench")
    by_testid(driver, "nav-new")[0].click()

    preset = wait_until(
        lambda: by_testid(driver, "preset-lecture"), 15, "the lecture preset", logs, driver
    )[0]
    assert preset.text == "Lecture: 8 optimizers on digits"
    preset.click()
    textarea = by_testid(driver, "spec-input")[0]
    spec = json.loads(textarea.get_attribute("value"))
    assert [o["name"] for o in spec["optimizers"]] == LABELS
    spec["epochs"] = 2  # keeps the test quick; every curve still has several points
    spec["seeds"] = [0, 1, 2]  # the lecture comparison with three seeds
    textarea.clear()
    textarea.send_keys(json.dumps(spec))
    by_testid(driver, "submit")[0].click()

    wait_until(lambda: "#/jobs/" in driver.current_url, 15, "the job page", logs, driver)
    job_id = driver.current_url.rsplit("/", 1)[-1]

    def status() -> str:
        return str(
            driver.execute_script(
                "const b = document.querySelector('[data-testid=job-status]');"
                "return b ? b.dataset.status : '';"
            )
        )

    wait_until(
        lambda: status() in ("succeeded", "failed", "cancelled"), 180, "the job", logs, driver
    )
    assert status() == "succeeded", by_testid(driver, "job-error")[0].text
    # The last poll renders the final curves and summary after the status; let it land.
    wait_until(
        lambda: (
            driver.execute_script("return document.querySelector('main').dataset.jobStatus")
            == "succeeded"
        ),
        10,
        "the final refresh",
        logs,
        driver,
    )
    driver.save_screenshot(str(SCREENSHOT))

    loss_chart = by_testid(driver, "loss-chart")[0]
    paths = by_testid(driver, "series-path", loss_chart)
    assert sorted(p.get_attribute("data-label") for p in paths) == sorted(LABELS * 3)
    for path in paths:  # a drawn line: at least a move and one segment
        assert "L" in path.get_attribute("d"), path.get_attribute("data-label")
    accuracy_paths = by_testid(driver, "series-path", by_testid(driver, "accuracy-chart")[0])
    assert sorted(p.get_attribute("data-label") for p in accuracy_paths) == sorted(LABELS * 3)

    legend = [item.get_attribute("data-label") for item in by_testid(driver, "legend-item")]
    assert legend == LABELS
    table = by_testid(driver, "summary-table")[0]
    rows = by_testid(driver, "summary-row", table)
    assert [row.get_attribute("data-label") for row in rows] == LABELS
    assert all(label in table.text for label in LABELS)
    runs = by_testid(driver, "run-row")
    assert [run.get_attribute("data-label") for run in runs] == LABELS * 3
    assert all(
        s.get_attribute("data-status") == "succeeded" for s in by_testid(driver, "run-status")
    )

    report = by_testid(driver, "report-link")[0]
    assert report.get_attribute("href") == f"{url}/v1/jobs/{job_id}/report"

    # Back to the list: the job is there, finished, with a full progress bar.
    by_testid(driver, "nav-jobs")[0].click()
    row = wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, f'[data-job-id="{job_id}"]'),
        15,
        "the job in the list",
        logs,
        driver,
    )[0]
    assert by_testid(driver, "job-status", row)[0].get_attribute("data-status") == "succeeded"
    assert by_testid(driver, "job-progress", row)[0].get_attribute("value") == "1"

    errors = severe(driver.get_log("browser"))
    assert not errors, errors


def test_an_invalid_spec_shows_the_field_and_message(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    url, logs = server
    driver = browser
    driver.get(f"{url}/#/new")
    textarea = wait_until(lambda: by_testid(driver, "spec-input"), 15, "the form", logs, driver)[0]
    textarea.clear()
    textarea.send_keys(json.dumps({"dataset": {"name": "digits"}, "optimizers": [{"name": "x"}]}))
    by_testid(driver, "submit")[0].click()
    errors = wait_until(
        lambda: by_testid(driver, "form-error"), 15, "the field errors", logs, driver
    )
    assert any("optimizers" in (e.get_attribute("data-field") or "") for e in errors), [
        e.text for e in errors
    ]
    assert "#/new" in driver.current_url

    textarea.clear()
    textarea.send_keys("{not json")
    by_testid(driver, "submit")[0].click()
    wait_until(lambda: by_testid(driver, "json-error"), 5, "the JSON error", logs, driver)

    # The rejected POST is the browser's one logged error (a 422 response); nothing else.
    logged = severe(driver.get_log("browser"))
    assert all("422" in entry["message"] for entry in logged), logged


def test_the_page_and_its_files_are_served_with_no_external_reference() -> None:
    """Without a browser: ``/`` loads the chart library (a classic script) before the page's
    module; every .js and .css file under services/web is served with its type and the
    headers, nothing else is (no other suffix, no path out of the folder), and no file
    references another origin."""
    import re

    from services.api.app import create_app
    from services.api.routes.web import STATIC_FILES, WEB_DIR
    from services.spec import LECTURE_SPEC

    client = local_client(create_app())
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    library = page.text.index('<script src="/web/vendor/uPlot.iife.min.js"></script>')
    module = page.text.index('<script type="module" src="/web/js/main.js"></script>')
    assert library < module
    for sheet in ("/web/vendor/uPlot.min.css", "/web/charts.css", "/web/style.css"):
        assert f'<link rel="stylesheet" href="{sheet}" />' in page.text

    on_disk = {
        p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*") if p.suffix in (".js", ".css")
    }
    assert set(STATIC_FILES) == on_disk
    assert {"js/main.js", "js/charts.js", "vendor/uPlot.iife.min.js", "style.css"} <= on_disk
    # Every module the page imports is one of them (a typo'd import would be a 404 in the page).
    imports = re.compile(r'^import .* from "\./([\w.]+)";$', re.M)
    for name in [n for n in on_disk if n.startswith("js/")]:
        for imported in imports.findall((WEB_DIR / name).read_text()):
            assert f"js/{imported}" in on_disk, (name, imported)
    for name in on_disk:
        response = client.get(f"/web/{name}")
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in response.headers["content-security-policy"]
    for refused in (
        "index.html",
        "vendor/README.md",
        "vendor/uPlot.LICENSE",
        "app.js",
        "js/../../api/app.py",
        "..%2Fapi%2Froutes%2Fweb.py",
        "%2Fetc%2Fpasswd",
        "js/missing.js",
    ):
        missing = client.get(f"/web/{refused}")
        assert missing.status_code == 404, refused
        assert missing.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/presets").json() == {"lecture": LECTURE_SPEC}

    allowed = {"http://www.w3.org/2000/svg"}
    for name in ["index.html", *on_disk]:
        text = (WEB_DIR / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'`)]*", text))
        if name.startswith("vendor/"):  # the library's licence banner names its home page
            urls -= {"https://github.com/leeoniya/uPlot"}
        assert urls <= allowed, (name, urls)


def test_pip_install_ships_every_file_of_the_page() -> None:
    """pyproject's package-data globs (as setuptools expands them, from services/) cover every
    file under services/web, subfolders included."""
    import glob
    import tomllib

    from services.api.routes.web import WEB_DIR

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    services = root / "services"
    shipped: set[str] = set()
    for pattern in config["package-data"]["services"]:
        shipped |= set(glob.glob(pattern, root_dir=services))
    files = {p.relative_to(services).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()}
    assert files - shipped == set()


def test_the_api_key_page_stores_the_key_the_page_sends(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    """A stored key goes with every request (an unknown one is refused even from this
    machine, and the problem links to the key page); forgetting it restores keyless local use."""
    url, logs = server
    driver = browser
    driver.get(f"{url}/#/key")
    state = wait_until(lambda: by_testid(driver, "api-key-state"), 15, "the key page", logs, driver)
    assert "No key is stored" in state[0].text
    by_testid(driver, "api-key-input")[0].send_keys("ob_000000000000_" + "x" * 43)
    by_testid(driver, "api-key-save")[0].click()
    assert "A key is stored" in by_testid(driver, "api-key-state")[0].text

    by_testid(driver, "nav-jobs")[0].click()
    problem = wait_until(lambda: by_testid(driver, "problem"), 15, "the 401 problem", logs, driver)
    assert "unknown or revoked" in problem[0].text and "Set an API key" in problem[0].text
    assert all("401" in entry["message"] for entry in severe(driver.get_log("browser")))

    driver.get(f"{url}/#/key")
    wait_until(lambda: by_testid(driver, "api-key-state"), 15, "the key page", logs, driver)
    driver.find_element("xpath", "//button[text()='Forget']").click()
    assert "No key is stored" in by_testid(driver, "api-key-state")[0].text
    by_testid(driver, "nav-jobs")[0].click()
    wait_until(lambda: by_testid(driver, "jobs-count"), 15, "the job list", logs, driver)
    assert not by_testid(driver, "problem")


def test_a_running_job_can_be_cancelled_from_its_page(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    url, logs = server
    driver = browser
    spec = {
        "name": "long enough to cancel",
        "dataset": {"name": "iris"},
        "model": {"name": "mlp", "hidden": [16]},
        "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}],
        "epochs": 10_000,
        "batch_size": 16,
    }
    job = httpx.post(f"{url}/v1/jobs", json=spec, timeout=10).json()
    driver.get(f"{url}/#/jobs/{job['id']}")
    button = wait_until(
        lambda: [b for b in by_testid(driver, "cancel-job") if b.is_displayed()],
        15,
        "the cancel button",
        logs,
        driver,
    )[0]
    button.click()
    wait_until(
        lambda: [b for b in by_testid(driver, "job-status") if b.text == "cancelled"],
        15,
        "the cancelled status",
        logs,
        driver,
    )
    assert not by_testid(driver, "cancel-job")[0].is_displayed()
    assert httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "cancelled"
    assert severe(driver.get_log("browser")) == []
