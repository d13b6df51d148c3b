"""``optbench submit/status/watch/summary`` against a running API and worker (embedded default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.cli import main
from services.client import ApiClient
from tests.support import free_port

SPEC = {
    "name": "remote cli",
    "dataset": {"name": "iris"},
    "model": {"name": "mlp", "hidden": [16]},
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}],
    "epochs": 3,
    "batch_size": 16,
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "OPTBENCH_HOME": str(home), "OPTBENCH_WORKER_METRICS_PORT": "0"}
    for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
        env.pop(name, None)
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate"], env=env, check=True, capture_output=True
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for args in (["api", "--port", str(port)], ["worker", "--pool", "solo"])
    ]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url
    for process in processes:
        process.terminate()
        process.wait(timeout=20)


def test_submit_watch_status_and_summary(
    api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    assert main(["submit", str(spec_file), "--url", api_url, "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]

    assert main(["watch", job_id, "--url", api_url, "--json"]) == 0
    watched = json.loads(capsys.readouterr().out)
    assert watched["status"] == "succeeded"
    assert [row["label"] for row in watched["summary"]["optimizers"]] == ["sgd", "adam"]

    assert main(["status", job_id, "--url", api_url]) == 0
    status = capsys.readouterr().out
    assert f"job {job_id}: succeeded" in status
    assert status.count("seed") == 4 and "[########################]" in status

    assert main(["summary", job_id, "--url", api_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[-2:]] == ["sgd", "adam"]


def test_an_unreachable_api_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "00000000-0000-0000-0000-000000000000", "--url", unreachable]) == 3
    err = capsys.readouterr().err
    assert err.startswith("optbench: error: cannot reach the optbench API") and err.count("\n") == 1


def test_an_unknown_job_is_the_apis_message(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", "00000000-0000-0000-0000-000000000000", "--url", api_url]) == 1
    assert "404 no job with id" in capsys.readouterr().err


def test_cancel_stops_a_long_job_and_says_so(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ApiClient(api_url) as client:
        job = client.submit({**SPEC, "epochs": 10_000})  # hours, unless cancelled
    assert main(["cancel", job["id"], "--url", api_url]) == 0
    assert capsys.readouterr().out.startswith(f"job {job['id']}: cancelled")
    assert main(["cancel", job["id"], "--url", api_url]) == 1  # refused: a conflict
    err = capsys.readouterr().err
    assert "409" in err and "already cancelled" in err


def test_list_shows_the_jobs_newest_first_and_filters_them(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ApiClient(api_url) as client:
        first = client.submit({**SPEC, "name": "list-alpha"})
        second = client.submit({**SPEC, "name": "list-beta"})
    assert main(["list", "--json", "--url", api_url]) == 0
    listed = json.loads(capsys.readouterr().out)  # the API's job objects, as an array
    assert isinstance(listed, list) and {"id", "spec", "runs", "progress"} <= listed[0].keys()
    ids = [job["id"] for job in listed]
    assert ids.index(second["id"]) < ids.index(first["id"])  # newest first
    assert main(["list", "--name", "ALPHA", "--json", "--url", api_url]) == 0
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == [first["id"]]
    assert main(["list", "--url", api_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "name", "status", "dataset", "model", "progress", "duration"]
    beta = next(line for line in table if line.startswith(second["id"][:8]))
    assert beta.split()[1:2] == ["list-beta"] and SPEC["dataset"]["name"] in beta.split()
    assert table[-1].startswith(f"({len(table) - 3} shown of ")
    assert main(["list", "--limit", "0", "--url", api_url]) == 2


def test_list_filters_on_the_data_set_and_model(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ApiClient(api_url) as client:
        mlp = client.submit({**SPEC, "name": "filter-mlp", "epochs": 1})
        linear = [
            client.submit(
                {**SPEC, "name": f"filter-linear-{n}", "model": {"name": "linear"}, "epochs": 1}
            )
            for n in range(2)
        ]
    assert main(["list", "--model", "LINEAR", "--json", "--url", api_url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in listed] == [linear[1]["id"], linear[0]["id"]]
    assert (
        main(
            [
                "list",
                "--dataset",
                "iris",
                "--model",
                "mlp",
                "--name",
                "filter-",
                "--json",
                "--url",
                api_url,
            ]
        )
        == 0
    )
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == [mlp["id"]]
    assert main(["list", "--dataset", "no-such-set", "--url", api_url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(0 shown of 0)"
    assert main(["list", "--model", "linear", "--limit", "1", "--url", api_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith(linear[1]["id"][:8])
    assert table[-1] == "(1 shown, more match: raise --limit)"


def test_a_job_is_named_by_any_unique_prefix_of_its_id(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ApiClient(api_url) as client:
        job = client.submit({**SPEC, "name": "prefix"})
        others = [item["id"] for item in client.jobs(limit=200)["items"]]
    plain = job["id"].replace("-", "")
    # The shortest prefix that names only this job (4 hex digits at least).
    length = next(
        n
        for n in range(4, 33)
        if sum(other.replace("-", "").startswith(plain[:n]) for other in others) == 1
    )
    assert main(["status", plain[:length].upper(), "--url", api_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job["id"]
    assert main(["status", "abc", "--url", api_url]) == 2  # too short to be a prefix
    assert "first 4 hex digits" in capsys.readouterr().err
    unused = next(
        f"{n:04x}" for n in range(16**4) if not any(o.startswith(f"{n:04x}") for o in others)
    )
    assert main(["summary", unused, "--url", api_url]) == 1  # no such job
    assert f"no job whose id starts with {unused}" in capsys.readouterr().err


@pytest.mark.integration
def test_delete_removes_a_finished_job_and_refuses_a_running_one(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ApiClient(api_url) as client:
        done = client.submit({**SPEC, "name": "to delete"})
        client.wait(done["id"], on_update=lambda state: None)
        long = client.submit({**SPEC, "name": "long", "epochs": 10_000})
        deadline = time.monotonic() + 60
        while client.job(long["id"])["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert main(["delete", done["id"], "--url", api_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"deleted job {done['id']}: 4 runs, ") and "step rows" in out
    assert main(["status", done["id"], "--url", api_url]) == 1
    assert "404" in capsys.readouterr().err

    assert main(["delete", long["id"], "--url", api_url]) == 1  # running: refused
    err = capsys.readouterr().err
    assert "409" in err and "cancel it first" in err
    assert main(["cancel", long["id"], "--url", api_url]) == 0
    assert "cancelled" in capsys.readouterr().out
    # The worker stops at its next flush, then lets go of its runs: deletable at once after.
    deadline, code = time.monotonic() + 30, 1
    while time.monotonic() < deadline:
        code = main(["delete", long["id"], "--url", api_url, "--json"])
        if code == 0:
            break
        assert "still stopping" in capsys.readouterr().err
        time.sleep(0.5)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["id"] == long["id"]
