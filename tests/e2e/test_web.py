"""The web page in headless Chromium, against ``optbench api`` and ``optbench worker``
processes on the embedded default (SQLite + filesystem broker in a temporary home).

Open ``/``, go to the form, load the lecture preset, submit it, watch the job page until the
job has succeeded, then check the summary table (final ranks, the target's sign) and the runs
table (one row per optimizer, its seeds folded) show all eight optimizers, the report link,
and that the browser console logged no error. Then: the list's columns and filters, a
landscape job's table, ranks that wait for the job to finish, the form's errors, the key
page and cancelling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import SCREENSHOT, by_testid, severe, tails, wait_until
from tests.support import local_client

LABELS = ["gd", "sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"]


def test_submit_the_lecture_preset_and_watch_it_finish(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    from selenium.webdriver.common.by import By

    from services.spec import LECTURE_TUNED_SPEC

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
    tuned = by_testid(driver, "preset-lecture-tuned")[0]  # the tuning study (issue 14)
    assert tuned.text == "Lecture, tuned: 16 learning rates each, best rerun on 5 seeds"
    tuned.click()
    textarea = by_testid(driver, "spec-input")[0]
    assert json.loads(textarea.get_attribute("value")) == LECTURE_TUNED_SPEC
    preset.click()
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

    # The charts are charts.js's (tests/e2e/test_charts.py): here, that they were mounted in
    # their section and that the page's own button colours do not make theirs unreadable.
    charts = by_testid(driver, "charts")
    assert len(charts) == 1 and charts[0].get_attribute("aria-busy") is None
    unreadable = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=charts] button')]"
        ".filter((b) => { const s = getComputedStyle(b); return s.color === s.backgroundColor; })"
        ".map((b) => b.textContent);"
    )
    assert unreadable == [], unreadable

    table = by_testid(driver, "summary-table")[0]
    assert table.get_attribute("data-ranked") == "final"
    rows = by_testid(driver, "summary-row", table)
    assert [row.get_attribute("data-label") for row in rows] == LABELS
    assert all(label in table.text for label in LABELS)
    ranks = [cell.text for cell in by_testid(driver, "rank", table)]
    assert len(ranks) == 8 and all(rank.isdigit() for rank in ranks) and "1" in ranks, ranks
    assert "val_accuracy ≥ 0.9" in by_testid(driver, "summary-target", table)[0].text

    # Runs: one row per optimizer, the three seeds folded into it.
    groups = by_testid(driver, "run-group")
    assert [group.get_attribute("data-label") for group in groups] == LABELS
    assert all(group.get_attribute("data-status") == "succeeded" for group in groups)
    runs = by_testid(driver, "run-row")
    assert sorted((r.get_attribute("data-label"), r.get_attribute("data-seed")) for r in runs) == (
        sorted((label, str(seed)) for label in LABELS for seed in (0, 1, 2))
    )
    assert not any(run.is_displayed() for run in runs)  # folded
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
    from services.spec import LECTURE_SPEC, LECTURE_TUNED_SPEC, modern_spec

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
    # No worker here publishes plugin optimizers: the modern preset keeps AdamW alone.
    presets = {
        "lecture": LECTURE_SPEC,
        "lecture-tuned": LECTURE_TUNED_SPEC,
        "modern": modern_spec([]),
    }
    assert client.get("/v1/presets").json() == presets

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


def iris_spec(name: str, epochs: int, seeds: list[int] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"name": "iris"},
        "model": {"name": "mlp", "hidden": [16]},
        "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}],
        "epochs": epochs,
        "batch_size": 16,
    }
    if seeds is not None:
        spec["seeds"] = seeds
    return spec


def finished(url: str, job_ids: list[str], logs: list[Path], timeout: float = 180) -> list[Any]:
    """The jobs once each has finished (through the API, not the page)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = [httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json() for job_id in job_ids]
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            assert all(job["status"] == "succeeded" for job in jobs), [j["error"] for j in jobs]
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"jobs did not finish: {[j['status'] for j in jobs]}\n{tails(logs)}")
        time.sleep(0.5)


def test_the_list_shows_and_filters_jobs_and_the_job_pages_answer_like_the_report(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    """Two jobs of one name (iris, two optimizers, three seeds, one epoch) and a landscape job
    (the Rosenbrock example, a few epochs): the list tells them apart by data set, model and
    best optimizer and filters them (the filters survive a reload); an iris job's runs fold
    its seeds; the landscape's summary compares distance with ≤ and shows final distance."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, logs = server
    driver = browser
    twins = [
        httpx.post(f"{url}/v1/jobs", json=iris_spec("twin iris", 1, [0, 1, 2]), timeout=10).json()
        for _ in range(2)
    ]
    landscape = json.loads(Path("examples/rosenbrock.json").read_text())
    landscape["epochs"] = 30
    valley = httpx.post(f"{url}/v1/jobs", json=landscape, timeout=10).json()
    jobs = finished(url, [twins[0]["id"], twins[1]["id"], valley["id"]], logs)
    best = {job["id"]: job["best_label"] for job in jobs}
    assert all(best.values()), best  # every finished job has one

    # The landscape job: the target reads "distance ≤ 0.05", the table shows distances.
    driver.get(f"{url}/#/jobs/{valley['id']}")
    table = wait_until(lambda: by_testid(driver, "summary-table"), 15, "the summary", logs, driver)[
        0
    ]
    assert by_testid(driver, "summary-target", table)[0].text == "Target: distance ≤ 0.05"
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers[:4] == ["Rank", "Optimizer", "Final distance", "Final loss"], headers
    assert not any("val" in header.lower() for header in headers), headers
    first = by_testid(driver, "summary-row", table)[0]
    assert first.find_elements(By.TAG_NAME, "td")[1].text != "—"  # a final distance

    # An iris job: two rows, the three seeds of each unfold from its row.
    driver.get(f"{url}/#/jobs/{twins[0]['id']}")
    groups = wait_until(lambda: by_testid(driver, "run-group"), 15, "the runs", logs, driver)
    assert [g.get_attribute("data-label") for g in groups] == ["sgd", "adam"]
    assert len(by_testid(driver, "run-row")) == 6
    fold = by_testid(driver, "run-seeds", groups[1])[0]
    assert fold.find_element(By.TAG_NAME, "summary").text == "3 seeds"
    fold.find_element(By.TAG_NAME, "summary").click()
    seeds = by_testid(driver, "run-row", groups[1])
    assert [(r.get_attribute("data-seed"), r.is_displayed()) for r in seeds] == [
        ("0", True),
        ("1", True),
        ("2", True),
    ]

    # The list: data set, model and best optimizer tell the twins from the landscape job.
    driver.get(f"{url}/#/")
    name_filter = wait_until(lambda: by_testid(driver, "name-filter"), 15, "the list", logs, driver)
    name_filter[0].send_keys("TWIN")

    def listed() -> dict[str, list[str]]:
        """Each listed job's data set, model and best optimizer, by id."""
        cells = ("job-dataset", "job-model", "job-best")
        return {
            row.get_attribute("data-job-id"): [by_testid(driver, c, row)[0].text for c in cells]
            for row in by_testid(driver, "job-row")
        }

    twin_ids = {twins[0]["id"], twins[1]["id"]}
    wait_until(lambda: set(listed()) == twin_ids, 15, "the name filter", logs, driver)
    assert listed() == {job_id: ["iris", "mlp", best[job_id]] for job_id in twin_ids}
    assert "name=TWIN" in driver.current_url
    row = driver.find_element(By.CSS_SELECTOR, f'[data-job-id="{twins[0]["id"]}"]')
    assert by_testid(driver, "job-duration", row)[0].text.endswith("s")

    options = '[data-testid="dataset-filter"] option[value="rosenbrock"]'
    wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, options), 15, "the catalog", logs, driver
    )
    Select(by_testid(driver, "dataset-filter")[0]).select_by_value("rosenbrock")
    wait_until(
        lambda: by_testid(driver, "jobs-no-match")[0].is_displayed(), 15, "no match", logs, driver
    )
    assert "dataset=rosenbrock" in driver.current_url
    driver.refresh()  # the filters come back from the URL
    wait_until(
        lambda: by_testid(driver, "jobs-no-match")[0].is_displayed(), 15, "reload", logs, driver
    )
    assert by_testid(driver, "name-filter")[0].get_attribute("value") == "TWIN"
    name_filter = by_testid(driver, "name-filter")[0]
    name_filter.clear()
    name_filter.send_keys("rosenbrock")  # the example's name says it
    wait_until(lambda: set(listed()) == {valley["id"]}, 15, "the landscape job", logs, driver)
    assert listed()[valley["id"]] == ["rosenbrock", "point", best[valley["id"]]]
    # Since the reload the options come from a new GET /v1/catalog: wait for them.
    models = '[data-testid="model-filter"] option[value="mlp"]'
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, models), 15, "models", logs, driver)
    Select(by_testid(driver, "model-filter")[0]).select_by_value("mlp")
    wait_until(
        lambda: by_testid(driver, "jobs-no-match")[0].is_displayed(), 15, "model", logs, driver
    )

    errors = severe(driver.get_log("browser"))
    assert not errors, errors


def test_ranks_wait_for_the_job_to_finish(browser: Any, server: tuple[str, list[Path]]) -> None:
    """A running job's ranks each read "provisional"; a queued job (behind it on the one
    worker) has no rank column."""
    url, logs = server
    driver = browser
    running = httpx.post(f"{url}/v1/jobs", json=iris_spec("ranks: running", 10_000), timeout=10)
    queued = httpx.post(f"{url}/v1/jobs", json=iris_spec("ranks: queued", 1), timeout=10)
    ids = [running.json()["id"], queued.json()["id"]]

    def shown(status: str) -> Any:
        """The summary table once the page shows the job in ``status`` (one refresh draws
        both, so reading them together is consistent)."""
        return driver.execute_script(
            "const t = document.querySelector('[data-testid=summary-table]');"
            "return document.querySelector('main').dataset.jobStatus === arguments[0] && t"
            " ? {ranked: t.dataset.ranked, text: t.innerText,"
            " ranks: [...t.querySelectorAll('[data-testid=rank]')].map((c) => c.textContent)}"
            " : null;",
            status,
        )

    try:
        driver.get(f"{url}/#/jobs/{ids[1]}")
        table = wait_until(lambda: shown("queued"), 30, "the queued job", logs, driver)
        assert table["ranked"] == "no" and table["ranks"] == [], table
        assert "Rank" not in table["text"] and "(so far)" in table["text"]

        driver.get(f"{url}/#/jobs/{ids[0]}")
        table = wait_until(lambda: shown("running"), 60, "the running job", logs, driver)
        assert table["ranked"] == "provisional", table
        assert table["ranks"] == ["provisional", "provisional"], table
    finally:
        for job_id in ids:
            httpx.post(f"{url}/v1/jobs/{job_id}/cancel", timeout=10)
    errors = severe(driver.get_log("browser"))
    assert not errors, errors


def summary_table(driver: Any, summary: dict[str, Any], status: str) -> dict[str, Any]:
    """The page's own summary module (js/summary.js) run on ``summary``: the table's caption,
    headers and cell texts."""
    result: dict[str, Any] = driver.execute_async_script(
        """
        const [summary, status, done] = arguments;
        import("/web/js/summary.js").then((module) => {
          const table = module.summaryTable(summary, status);
          done({
            caption: table.caption.textContent,
            headers: [...table.tHead.rows[0].cells].map((cell) => cell.textContent),
            rows: [...table.tBodies[0].rows].map((row) => [...row.cells].map((c) => c.textContent)),
          });
        }, (error) => done({ error: String(error) }));
        """,
        summary,
        status,
    )
    assert "error" not in result, result
    return result


def test_the_summary_table_shows_test_metrics_and_the_task_s_columns(
    browser: Any, server: tuple[str, list[Path]]
) -> None:
    """Summaries no job of this server has yet: test loss and accuracy (present on newer
    summaries, absent on older ones), a regression's R², a loss target's sign."""
    url, logs = server
    driver = browser
    driver.get(f"{url}/#/key")
    wait_until(lambda: by_testid(driver, "api-key-state"), 15, "the page", logs, driver)
    row = {
        "label": "adam",
        "rank": 1,
        "final_train_loss": 0.1,
        "best_val_accuracy": 0.95,
        "test_loss": 0.2,
        "test_accuracy": 0.93,
        "steps_to_target": 40,
        "seconds_to_target": 1.5,
        "target_reached": "3/3",
        "diverged": 0,
        "stats": {"best_val_accuracy": {"mean": 0.95, "std": 0.01, "median": 0.95, "n": 3}},
    }
    slower = {**row, "label": "sgd", "rank": 2, "test_loss": None, "test_accuracy": None}
    summary = {
        "task": "classification",
        "target": {"metric": "val_accuracy", "value": 0.9},
        "best": "adam",
        "optimizers": [row, slower],
    }
    table = summary_table(driver, summary, "succeeded")
    assert table["caption"] == "Target: val_accuracy ≥ 0.9 · best: adam"
    assert table["headers"] == [
        "Rank",
        "Optimizer",
        "Final train loss",
        "Best val accuracy",
        "Test loss",
        "Test accuracy",
        "Steps to target",
        "Time to target",
        "Reached",
        "Diverged",
    ]
    assert table["rows"][0] == [
        "1",
        "adam",
        "0.1000",
        "95.00% ± 1.00%",
        "0.2000",
        "93.00%",
        "40",
        "1.50 s",
        "3/3",
        "0",
    ]
    assert table["rows"][1][4:6] == ["—", "—"]

    older = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in (row, slower)]
    table = summary_table(driver, {**summary, "optimizers": older}, "running")
    assert not any(h.startswith("Test") for h in table["headers"])
    assert table["caption"] == "Target: val_accuracy ≥ 0.9 (so far)"
    assert [r[0] for r in table["rows"]] == ["provisional", "provisional"]

    regression = {**summary, "task": "regression", "target": {"metric": "val_r2", "value": 0.8}}
    table = summary_table(driver, regression, "succeeded")
    assert "Best val R²" in table["headers"] and "Test R²" in table["headers"]
    assert table["caption"].startswith("Target: val_r2 ≥ 0.8")
    assert table["rows"][0][3] == "0.9500 ± 0.0100"

    loss_target = {**summary, "target": {"metric": "val_loss", "value": 0.3}}
    table = summary_table(driver, loss_target, "queued")
    assert table["caption"] == "Target: val_loss ≤ 0.3 (so far)"
    assert table["headers"][0] == "Optimizer" and table["rows"][0][0] == "adam"  # no ranks
    assert severe(driver.get_log("browser")) == []
