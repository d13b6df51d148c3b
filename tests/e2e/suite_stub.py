"""A stand-in for the suite routes, for the web page's suite views in headless Chromium until
the suite backend (the suite-core branch: ``POST /v1/suites``, ``GET /v1/suites``,
``GET /v1/suites/{id}/scores``) is merged. AT MERGE: switch tests/e2e/test_suite_charts.py's
``suite_site`` fixture to ``real_suite_site`` (one line) and delete this module.

It serves the real page (``/`` and ``/web/...``, from services/api/routes/web.py's file list,
with its headers: the page runs under its real Content-Security-Policy) and planted answers
(tests/suite_scores.py) for those three routes: the planted suite's scores read ``running``
for the first ``running_polls`` requests, then ``succeeded``; ``POST /v1/suites`` records
its body and answers a new suite that is the planted one. Anything else is a 404 problem,
except ``/v1/presets`` (the job form asks for it), answered ``{}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.api.routes.web import _HEADERS, _MEDIA_TYPES, STATIC_FILES, WEB_DIR
from tests import suite_scores


@dataclass
class StubState:
    suite_id: str
    running_polls: int
    polls: int = 0
    posted: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scores(self) -> dict[str, Any]:
        with self.lock:
            self.polls += 1
            running = self.polls <= self.running_polls
        scores = suite_scores.running() if running else suite_scores.succeeded()
        return {**scores, "suite_id": self.suite_id}

    def listed(self) -> dict[str, Any]:
        scores = suite_scores.succeeded() if self.polls > self.running_polls else None
        jobs = [j for w in (scores or suite_scores.running())["workloads"] for j in w["jobs"]]
        done = sum(1 for j in jobs if j["status"] in ("succeeded", "failed", "cancelled"))
        item = {
            "id": self.suite_id,
            "name": "lecture suite",
            "status": "succeeded" if scores else "running",
            "created_at": "2026-12-02T05:00:00Z",
            "jobs_done": done,
            "jobs_total": len(jobs),
        }
        return {"items": [item], "total": 1}


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, kind: str, headers: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if headers:
                for key, value in _HEADERS.items():
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _missing(self) -> None:
            problem = {"title": "Not Found", "status": 404, "detail": f"stub: no {self.path}"}
            self._send(404, json.dumps(problem).encode(), "application/problem+json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                page = (WEB_DIR / "index.html").read_bytes()
                self._send(200, page, "text/html; charset=utf-8", headers=True)
            elif path.startswith("/web/") and path[5:] in STATIC_FILES:
                file = STATIC_FILES[path[5:]]
                self._send(200, file.read_bytes(), _MEDIA_TYPES[file.suffix], headers=True)
            elif path == "/v1/suites":
                self._json(state.listed())
            elif path == f"/v1/suites/{state.suite_id}/scores":
                self._json(state.scores())
            elif path == "/v1/presets":
                self._json({})
            else:
                self._missing()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if self.path != "/v1/suites":
                self._missing()
                return
            state.posted.append(body)
            self._json({**state.listed()["items"][0], "status": "queued"}, status=201)

    return Handler


@contextmanager
def stub_server(running_polls: int = 3) -> Iterator[tuple[str, StubState]]:
    """The stub on a free port: yields its base URL and its state."""
    state = StubState(suite_id=suite_scores.succeeded()["suite_id"], running_polls=running_polls)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
