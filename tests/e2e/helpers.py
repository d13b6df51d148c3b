"""Helpers the browser tests share: wait for a condition (screenshot and server logs on
timeout), find elements by ``data-testid``, and pick the console's errors."""

from __future__ import annotations

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
