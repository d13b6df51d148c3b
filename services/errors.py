"""The domain errors. Routes raise these; one handler renders them as RFC 9457 problem+json.

OptbenchError (500)
├── Unauthorized (401)        no API key, or one that is unknown or revoked
├── NotFound (404)            a job or data set that does not exist (or is not the caller's)
├── Conflict (409)            an action the resource's state does not allow
├── PayloadTooLarge (413)     a request body or an upload over its size limit
├── InvalidSpec (422)         a job spec or query that fails validation
│   └── LimitExceeded (422)   a valid spec that asks for more than a limit allows
├── TooManyRequests (429)     too many jobs in flight; comes with Retry-After
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
        self.headers: dict[str, str] = {}


class Unauthorized(OptbenchError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False, **extra: Any) -> None:
        super().__init__(detail, **extra)
        # RFC 6750: which scheme to use, and whether the key sent was the problem.
        self.headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"' if invalid_token else "Bearer"
        )


class NotFound(OptbenchError):
    status, code, title = 404, "not-found", "Not found"


class InvalidSpec(OptbenchError):
    status, code, title = 422, "invalid-spec", "Invalid request"


class LimitExceeded(InvalidSpec):
    """A spec that is valid but asks for more than a configured limit: the body names the
    field, the setting, its maximum and what was asked for."""

    code, title = "limit-exceeded", "Limit exceeded"

    def __init__(self, field: str, message: str, *, setting: str, maximum: int, requested: int):
        super().__init__(
            f"{field}: {message}",
            errors=[{"field": field, "message": message}],
            limit={"setting": setting, "maximum": maximum, "requested": requested},
        )


class Conflict(OptbenchError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(OptbenchError):
    status, code, title = 413, "payload-too-large", "Payload too large"


class TooManyRequests(OptbenchError):
    status, code, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after_seconds=retry_after, **extra)
        self.headers["Retry-After"] = str(retry_after)


class Unavailable(OptbenchError):
    status, code, title = 503, "unavailable", "Temporarily unavailable"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = "5"
