"""The domain errors. Routes raise these; one handler renders them as RFC 9457 problem+json.

OptbenchError (500)
├── NotFound (404)            a job or run that does not exist (or is not the caller's)
├── InvalidSpec (422)         a job spec or query that fails validation
├── Conflict (409)            an action the resource's state does not allow
└── Unavailable (503)         the database or the broker cannot be reached right now
"""

from __future__ import annotations

from typing import Any


class OptbenchError(Exception):
    status = 500
    code = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(OptbenchError):
    status, code, title = 404, "not-found", "Not found"


class InvalidSpec(OptbenchError):
    status, code, title = 422, "invalid-spec", "Invalid request"


class Conflict(OptbenchError):
    status, code, title = 409, "conflict", "Conflict"


class Unavailable(OptbenchError):
    status, code, title = 503, "unavailable", "Temporarily unavailable"
