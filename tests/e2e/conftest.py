"""Fixtures of the browser tests: ``server`` (``optbench api`` and one ``optbench worker`` on
a fresh embedded default: SQLite + filesystem broker in a temporary home) and ``browser``
(headless Chromium through the system's ChromeDriver, console logs kept). Both are
module-scoped: each test module gets its own server and browser.

The helpers the tests share (waiting, looking up by ``data-testid``, console errors) are in
``tests/e2e/helpers.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import tails
from tests.support import free_port, require_binary, stop_processes, unavailable

HINT = "apt-get install chromium chromium-driver"


def start(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


# How long the API and the worker may take to stop once the module's tests are done. Nothing
# here tests their shutdown (tests/integration/test_faults_worker.py does): an idle worker's
# warm shutdown on the filesystem broker took 7 s, a tenth of the browser tests' time.
STOP_GRACE_SECONDS = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """``optbench api`` and one ``optbench worker`` on a fresh embedded default: yields the
    base URL and the two processes' log files (for failure messages)."""
    home = tmp_path_factory.mktemp("home")
    env = {
        **os.environ,
        "OPTBENCH_HOME": str(home),
        "OPTBENCH_WORKER_METRICS_PORT": "0",
    }
    env.pop("OPTBENCH_DATABASE_URL", None)
    env.pop("OPTBENCH_BROKER_URL", None)
    logs_dir = tmp_path_factory.mktemp("logs")
    api_log, worker_log = logs_dir / "api.log", logs_dir / "worker.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The API migrates the embedded database on start; the worker comes up once it has.
    api = start(env, "api", "--port", str(port), log=api_log)
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            if api.poll() is not None:
                pytest.fail(f"the API exited with status {api.returncode}\n{tails([api_log])}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API did not become ready\n{tails([api_log])}")
            time.sleep(0.3)
        worker = start(env, "worker", "--concurrency", "1", log=worker_log)
        yield url, [api_log, worker_log]
    finally:
        stop_processes([api, *([worker] if worker is not None else [])], STOP_GRACE_SECONDS)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through the system's ChromeDriver, console logs kept."""
    chromium = require_binary("chromium", HINT)
    chromedriver = require_binary("chromedriver", HINT)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,2200",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
