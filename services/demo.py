"""``optbench demo``: the whole service on the embedded default, in one command.

Starts the API and one Celery worker as child processes (the same commands a cluster runs),
submits the lecture's comparison over HTTP, shows per-run progress while it trains and prints
the per-optimizer table. Results stay in the embedded database: ``optbench api`` serves them.

``--tuned`` submits the tuning study instead (``LECTURE_TUNED_SPEC``: each optimizer's
learning rate searched, the best rerun on fresh seeds beside the lecture's value); its
``epochs`` and ``trials`` can be made smaller for a quick look, and it says
which commands show the trials and the report afterwards.

It needs no API key: the API listens on 127.0.0.1, and under ``OPTBENCH_AUTH=loopback`` (the
default) requests from this machine act as owner ``local``. Under ``OPTBENCH_AUTH=required``
it sends ``OPTBENCH_API_KEY``, and says so when there is none.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from typing import Any

from services.children import DEMO_WORKER_ARGS, Children, wait_until_up
from services.cli.progress import JobProgress
from services.client import ApiClient
from services.console import make_console, summary_table
from services.settings import get_settings
from services.spec import LECTURE_SPEC, LECTURE_TUNED_SPEC, MODERN_SPEC, modern_spec
from services.support import free_port

# Once the job has ended nothing is left to stop cleanly for: an idle Celery worker's warm
# shutdown took 4.9 s on the 2-core VM, as long as the rest of the demo after its start.
IDLE_STOP_SECONDS = 1.0


def demo_spec(
    *, tuned: bool = False, epochs: int | None = None, trials: int | None = None
) -> dict[str, Any]:
    """The spec the demo submits: the lecture's (10 epochs unless told), or with ``tuned``
    the tuned preset, its epochs and per-optimizer trials as given (default: the preset's)."""
    if not tuned:
        if trials is not None:
            raise ValueError("--trials needs --tuned (the plain demo has no trials)")
        return {**LECTURE_SPEC, "epochs": epochs or 10}
    spec: dict[str, Any] = {**LECTURE_TUNED_SPEC, "epochs": epochs or LECTURE_TUNED_SPEC["epochs"]}
    if trials is not None:
        spec["tuning"] = {**LECTURE_TUNED_SPEC["tuning"], "trials": trials}
    return spec


PRESETS = ("lecture", "modern")
PLUGIN_WAIT_SECONDS = 60.0


def with_budget(
    spec: dict[str, Any], epochs: int | None = None, trials: int | None = None
) -> dict[str, Any]:
    """A study preset with its epochs and per-optimizer trials as given (else its own)."""
    spec = {**spec, "epochs": epochs or spec["epochs"]}
    if trials is not None:
        spec["tuning"] = {**spec["tuning"], "trials": trials}
    return spec


def wait_for_plugins(client: ApiClient, timeout: float = PLUGIN_WAIT_SECONDS) -> list[str]:
    """The plugin optimizers the live workers can train, once the worker has published them
    (it imports the packages first: a few seconds); an empty list after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        listed = client.catalog().get("plugin_optimizers", [])
        names = [entry["name"] for entry in listed if not entry.get("refused")]
        if names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def modern_demo_spec(
    available: list[str], epochs: int | None = None, trials: int | None = None
) -> dict[str, Any]:
    """The modern preset with the implementations the workers have (``modern_spec``)."""
    return with_budget(modern_spec(available), epochs, trials)


def run_demo(
    epochs: int | None = None,
    *,
    tuned: bool = False,
    trials: int | None = None,
    preset: str = "lecture",
) -> int:
    from services.db.migrate import upgrade

    if preset not in PRESETS:
        print(f"optbench: error: --preset: use one of {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    modern = preset == "modern"
    tuned = tuned or modern
    try:
        spec = demo_spec(tuned=tuned, epochs=epochs, trials=trials)
    except ValueError as error:
        print(f"optbench: error: {error}", file=sys.stderr)
        return 2
    settings = get_settings()
    key = settings.api_key.get_secret_value() or None
    if settings.auth == "required" and key is None:
        print(
            "optbench: error: OPTBENCH_AUTH=required and no OPTBENCH_API_KEY: create a key with "
            "`optbench keys create --owner NAME` and set OPTBENCH_API_KEY to it, or leave "
            "OPTBENCH_AUTH at loopback (requests from this machine need no key)",
            file=sys.stderr,
        )
        return 2
    port = free_port()
    with ExitStack() as stack:
        children = stack.enter_context(Children())
        print("starting the API and one worker (embedded default: SQLite + filesystem broker)")
        # The worker first (or the one services/entry.py started before this command's
        # imports): it takes longest to start (torch, then a warm-up on the
        # lecture's data, workers/warm.py), and needs the database only once a job comes,
        # after the migration. One process, solo: the demo's job trains as one part.
        children.start(*DEMO_WORKER_ARGS)
        if not settings.is_embedded:  # the embedded default's API migrates before it serves
            upgrade()
        api = children.start("api", "--port", str(port), "--log-level", "warning")
        if key is None:
            print(
                "no API key needed: the API listens on 127.0.0.1 only, and requests from this "
                "machine act as owner 'local' (OPTBENCH_AUTH=loopback)"
            )
        client = stack.enter_context(ApiClient(f"http://127.0.0.1:{port}", api_key=key))
        wait_until_up(client, api)
        if modern:
            spec = modern_demo_spec(wait_for_plugins(client), epochs, trials)
            left_out = {e["label"] for e in MODERN_SPEC["optimizers"]} - {
                e["label"] for e in spec["optimizers"]
            }
            names = ", ".join(f"{e['label']} ({e['name']})" for e in spec["optimizers"])
            print(f"modern preset: {names}")
            if left_out:
                print(
                    f"left out, no worker has them: {', '.join(sorted(left_out))} (pip install "
                    "'optbench[more-optimizers]' adds pytorch-optimizer)"
                )
        job = client.submit(spec)
        what = f"{len(job['runs'])} runs"
        if tuned:  # the reruns and baselines are added when the search ends
            what = f"{len(job['runs'])} trials; the best of each is rerun afterwards"
        print(f"submitted job {job['id']}: {job['name']} ({what})")
        with JobProgress(every_seconds=2.0) as progress:
            job = client.wait(job["id"], on_update=progress.update)
        children.grace = IDLE_STOP_SECONDS  # the job has ended and its task is done
        summary = client.summary(job["id"])
        # The table before the processes stop (their shutdown is no part of the answer).
        print(f"job {job['id']}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
        make_console().print(summary_table(summary))
        print(
            f"\nMore: `optbench api`, then http://127.0.0.1:8000/ (the web page), "
            f"`optbench summary {job['id']}` or GET /v1/jobs/{job['id']}/metrics"
            + (
                f"; every trial: GET /v1/jobs/{job['id']}/trials; the tuneability plots: "
                f"`optbench report {job['id']}`"
                if tuned
                else ""
            ),
            flush=True,
        )
    return 0 if job["status"] == "succeeded" else 1
