"""A small client of the HTTP API, for the CLI (``optbench submit/status/watch/summary/report``)
and the demo. Errors come back as ``ApiError`` carrying the problem+json detail.

With an API key (``api_key``, from ``--key`` or ``OPTBENCH_API_KEY``) every request sends
``Authorization: Bearer <key>``; the key never appears in an error message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

FINISHED = ("succeeded", "failed", "cancelled")
LONG_POLL_SECONDS = 10.0  # one request of ``wait``: the API answers earlier on any change


def _progress(job: dict[str, Any]) -> tuple[Any, ...]:
    runs = tuple((run.get("status"), run.get("steps_done")) for run in job.get("runs", []))
    return job.get("status"), runs


class ApiError(Exception):
    """The API answered with an error (its problem+json detail; ``status`` the HTTP status),
    or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 30.0, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                f"cannot reach the optbench API at {self.base_url} ({error}); start it with "
                "`optbench api` or pass --url / set OPTBENCH_API_URL"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if response.status_code == 401:
                detail = f"{detail} (the CLI sends --key or OPTBENCH_API_KEY)"
            raise ApiError(
                f"{method} {path}: {response.status_code} {detail}", response.status_code
            )
        return response

    def catalog(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/catalog"))

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/jobs", json=spec))

    def jobs(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        name: str | None = None,
        dataset: str | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """A page of the caller's jobs, newest first (``GET /v1/jobs``), narrowed by status,
        a part of the name, the data set and the model when given."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        filters = {"status": status, "name": name, "dataset": dataset, "model": model}
        params.update({key: value for key, value in filters.items() if value})
        return dict(self._request("GET", "/v1/jobs", params=params))

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        """The job; with ``wait`` (seconds) a long-poll: the API answers once the job's
        status or progress changed, or after ``wait`` seconds (services/job_watch.py)."""
        params = {"wait": wait} if wait > 0 else None
        # The request may take ``wait`` seconds before the API starts its answer.
        timeout = self.http.timeout.read + wait if wait > 0 and self.http.timeout.read else None
        extra: dict[str, Any] = {"timeout": timeout} if timeout else {}
        return dict(self._request("GET", f"/v1/jobs/{job_id}", params=params, **extra))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> dict[str, Any]:
        """Delete a finished job and everything stored under it (``DELETE /v1/jobs/{id}``):
        its id and the rows of each kind that went."""
        return dict(self._request("DELETE", f"/v1/jobs/{job_id}"))

    def summary(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}/summary"))

    def compare(self, job_ids: list[str]) -> dict[str, Any]:
        """The jobs' summaries aligned by optimizer label (``GET /v1/compare``)."""
        return dict(self._request("GET", "/v1/compare", params={"jobs": ",".join(job_ids)}))

    def history(
        self, label: str, dataset: str, model: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One label's rows over the caller's succeeded jobs on ``dataset``
        (``GET /v1/optimizers/{label}/history``)."""
        params: dict[str, Any] = {"dataset": dataset}
        if model:
            params["model"] = model
        if limit is not None:
            params["limit"] = limit
        path = f"/v1/optimizers/{quote(label, safe='')}/history"
        return dict(self._request("GET", path, params=params))

    def trials(self, job_id: str, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """A page of a study's trials (``GET /v1/jobs/{id}/trials``; the API's default page
        size without ``limit``)."""
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        return dict(self._request("GET", f"/v1/jobs/{job_id}/trials", params=params))

    def trials_csv(self, job_id: str) -> str:
        """Every trial of a study as CSV (``?format=csv``)."""
        return self._send("GET", f"/v1/jobs/{job_id}/trials", params={"format": "csv"}).text

    def report(self, job_id: str) -> str:
        """The job's self-contained HTML report."""
        return self._send("GET", f"/v1/jobs/{job_id}/report").text

    def submit_suite(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a suite spec (or ``{"preset": NAME}``): ``POST /v1/suites``."""
        return dict(self._request("POST", "/v1/suites", json=spec))

    def suite(self, suite_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/suites/{suite_id}"))

    def suite_scores(self, suite_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/suites/{suite_id}/scores"))

    def suite_report(self, suite_id: str) -> str:
        return self._send("GET", f"/v1/suites/{suite_id}/report").text

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None],
        interval: float = 0.5,
        *,
        long_poll: float = LONG_POLL_SECONDS,
    ) -> dict[str, Any]:
        """Until the job has finished, calling ``on_update`` with each state. Each request
        is a long-poll of ``long_poll`` seconds (the API answers when the job changes, so
        its end is seen at once); ``interval`` paces the requests only where an answer came
        back early without a change (an API without long-polling), and every request when
        ``long_poll`` is 0 (plain polling)."""
        previous: dict[str, Any] | None = None
        while True:
            asked = time.monotonic()
            job = self.job(job_id, wait=long_poll)
            on_update(job)
            if job["status"] in FINISHED:
                return job
            unchanged = previous is not None and _progress(job) == _progress(previous)
            early = time.monotonic() - asked < long_poll / 2
            if long_poll <= 0 or (unchanged and early):
                time.sleep(interval)
            previous = job
