"""Helpers the browser tests share: wait for a condition (screenshot and server logs on
timeout), find elements by ``data-testid``, and pick the console's errors."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SCREENSHOT = Path("/tmp/web-job.png")


def tails(logs: list[Path]) -> str:
    """The end of each log file, for a failure message."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, logs: list[Path], driver: Any
) -> Any:
    """``condition()``'s first truthy value within ``timeout`` seconds, else fail the test with
    a screenshot and the server logs."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page re-rendered under the lookup
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            driver.save_screenshot(str(SCREENSHOT))
            pytest.fail(f"timed out waiting for {what} (screenshot {SCREENSHOT})\n{tails(logs)}")
        time.sleep(0.25)


def by_testid(driver: Any, testid: str, within: Any = None) -> list[Any]:
    from selenium.webdriver.common.by import By

    return (within or driver).find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def severe(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The console entries logged as errors."""
    return [entry for entry in entries if entry.get("level") == "SEVERE"]


def page_errors(driver: Any, url: str) -> list[dict[str, Any]]:
    """The console's errors since the last look, less one kind while the server has no
    ``GET /v1/jobs/{id}/charts`` (it comes with the chart module): the job page asks it on
    each refresh, and the browser logs each 404. Once the route is in the server's OpenAPI,
    its failures count like any other."""
    import httpx

    errors = severe(driver.get_log("browser"))
    paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    if any(path.startswith("/v1/jobs/") and path.endswith("/charts") for path in paths):
        return errors
    missing = re.compile(r"/v1/jobs/[0-9a-f-]+/charts - .* 404")
    return [entry for entry in errors if not missing.search(entry["message"])]
