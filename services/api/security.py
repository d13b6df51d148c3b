"""Who is calling, and how much they may send: the middleware in front of every route.

From the outside in: forwarded headers (``OPTBENCH_FORWARDED_ALLOW_IPS``,
services/api/proxies.py), allowed hosts (``OPTBENCH_ALLOWED_HOSTS``), CORS
(``OPTBENCH_CORS_ORIGINS``), authentication, the request body limit.

**Authentication** runs before a body is read, for every path under ``/v1``; the web page's
files, ``/healthz``, ``/readyz`` and the OpenAPI documentation are public (they hold no
one's data), and so is ``/metrics`` unless ``OPTBENCH_METRICS_TOKEN`` is set (then it needs
``Authorization: Bearer <that token>``, from anywhere; it is not an API key, and no API key
opens it). A request that sends ``Authorization: Bearer <key>`` is checked, always: an
unknown, revoked or malformed key is a 401. Without a key:

- ``OPTBENCH_AUTH=loopback`` (the default on the embedded SQLite database): a request *from
  this machine* acts as owner ``local``, so ``optbench demo``, ``optbench api`` with the CLI
  and the web page stay one command with nothing to configure. From this machine means: the
  peer address is loopback (127.0.0.0/8, ::1; behind a trusted proxy, the client it
  forwarded), no untrusted proxy relayed it (a ``Forwarded``/``X-Forwarded-For`` header from
  a peer not in ``OPTBENCH_FORWARDED_ALLOW_IPS``), the Host header names a loopback address
  (``localhost``, ``127.0.0.1``, ``[::1]``: a DNS-rebinding page has its own host name
  there), and a browser request comes from the API's own origin (``Origin``/
  ``Sec-Fetch-Site``: another web site open in the same browser cannot submit jobs as
  ``local``). Anything else is a 401.
- ``OPTBENCH_AUTH=required`` (the default with any other database: a service others reach):
  a 401, from anywhere. Set it too behind a reverse proxy on the same machine that sends no
  forwarded header (nginx's default), which makes every request look local.

**Failed authentications** (a refused key or /metrics token, a malformed Authorization
header) are limited per client address (``OPTBENCH_AUTH_FAILURES_PER_MINUTE``,
services/api/ratelimit.py): past the limit a request carrying credentials gets a 429 with
Retry-After, without a database lookup. Requests without credentials are not counted: they
cost no lookup.

Routes take the caller's owner from the ``Owner`` dependency (which also documents the
bearer scheme in OpenAPI, so ``/docs`` has an Authorize button).

**Body limit**: a request body other than a data set upload (which has its own, larger limit,
routes/datasets.py) is refused with a 413 once it passes ``OPTBENCH_MAX_REQUEST_BYTES``,
before anything parses it.

Keys are never logged: they travel in a header, which neither uvicorn's access log nor the
Prometheus metrics record.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import auth
from services.api.errors import database_down, database_unavailable, problem
from services.api.proxies import FORWARDED_KEY, ForwardedMiddleware
from services.api.ratelimit import FailureLimiter
from services.errors import OptbenchError, PayloadTooLarge, TooManyRequests, Unauthorized
from services.settings import get_settings
from services.telemetry import JOBS_REJECTED

OWNER_KEY = "optbench.owner"  # where the middleware leaves the caller's owner in the scope
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_HOW = "create one with `optbench keys create --owner NAME`"


def protected(path: str) -> bool:
    """Whether a path needs a caller: everything under /v1."""
    return path == "/v1" or path.startswith("/v1/")


class AuthMiddleware:
    """Puts the caller's owner into the scope, or answers 401/429 (see the module docstring).
    One failure limiter per app: its state is this process's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.limiter = FailureLimiter(get_settings().auth_failures_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (protected(scope["path"]) or _metrics(scope)):
            await self.app(scope, receive, send)
            return
        try:
            if protected(scope["path"]):
                scope[OWNER_KEY] = await caller(scope, self.limiter)
            else:
                check_metrics_token(scope, self.limiter)
        except OptbenchError as error:
            response = problem(
                error.status,
                error.title,
                error.detail,
                error.code,
                headers=error.headers,
                **error.extra,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _metrics(scope: Scope) -> bool:
    return scope["path"] == "/metrics" and bool(get_settings().metrics_token.get_secret_value())


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _limit(scope: Scope, limiter: FailureLimiter) -> None:
    """A 429 for a client past its failed authentications, before anything is looked up."""
    wait = limiter.retry_after(_client(scope))
    if wait is not None:
        limit = get_settings().auth_failures_per_minute
        raise TooManyRequests(
            f"too many failed authentications from this address: at most {limit} per minute "
            f"(OPTBENCH_AUTH_FAILURES_PER_MINUTE); retry in {wait} s with a valid key "
            f"({_HOW})",
            retry_after=wait,
        )


def _refused(scope: Scope, limiter: FailureLimiter, error: Unauthorized) -> Unauthorized:
    limiter.failed(_client(scope))
    return error


def check_metrics_token(scope: Scope, limiter: FailureLimiter) -> None:
    """``GET /metrics`` under ``OPTBENCH_METRICS_TOKEN``: the token, compared in constant
    time; a wrong or missing one is a 401 (and counts as a failure when one was sent)."""
    expected = get_settings().metrics_token.get_secret_value()
    header = Headers(scope=scope).get("authorization")
    how = (
        "GET /metrics needs the token of OPTBENCH_METRICS_TOKEN: send 'Authorization: Bearer "
        "<token>' (Prometheus: the scrape job's authorization block, "
        "deploy/prometheus/prometheus.yml)"
    )
    if header is None:
        raise Unauthorized(how)
    _limit(scope, limiter)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise _refused(scope, limiter, Unauthorized(how, invalid_token=True))


async def caller(scope: Scope, limiter: FailureLimiter) -> str:
    """The owner a request acts for; raises Unauthorized, TooManyRequests (or Unavailable)."""
    header = Headers(scope=scope).get("authorization")
    if header is not None:
        _limit(scope, limiter)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refused(
                scope,
                limiter,
                Unauthorized(
                    f"the Authorization header must be 'Bearer <key>' ({_HOW})",
                    invalid_token=True,
                ),
            )
        try:
            owner = await to_thread.run_sync(auth.authenticate, token.strip())
        except Exception as error:
            if database_down(error):
                raise database_unavailable(error) from None
            raise
        if owner is None:
            raise _refused(
                scope,
                limiter,
                Unauthorized(
                    f"the API key is unknown or revoked; {_HOW} (an operator can list them "
                    "with `optbench keys list`)",
                    invalid_token=True,
                ),
            )
        return owner
    if get_settings().auth == "loopback":
        if is_local(scope):
            return auth.LOCAL_OWNER
        raise Unauthorized(
            f"this route needs an API key: send 'Authorization: Bearer <key>' ({_HOW}); "
            "only requests from this machine may leave it out (OPTBENCH_AUTH=loopback), and "
            "not when a proxy relayed them"
        )
    raise Unauthorized(
        f"this route needs an API key: send 'Authorization: Bearer <key>' ({_HOW}); "
        "OPTBENCH_AUTH=required (the default off the embedded SQLite database; an operator "
        "who wants requests from this machine let in without a key sets "
        "OPTBENCH_AUTH=loopback)"
    )


def is_local(scope: Scope) -> bool:
    """A request from this machine, to a loopback name, not sent by another web origin."""
    client = scope.get("client")
    if not client or not _is_loopback_address(client[0]) or scope.get(FORWARDED_KEY):
        return False
    headers = Headers(scope=scope)
    host = headers.get("host", "")
    if _host_name(host) not in _LOOPBACK_NAMES and not _is_loopback_address(_host_name(host)):
        return False
    origin = headers.get("origin")
    if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
        return False
    return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _host_name(host: str) -> str:
    """``localhost:8000`` -> ``localhost``, ``[::1]:8000`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key, `ob_...` (`optbench keys create --owner NAME`). Requests from "
    "this machine need none under OPTBENCH_AUTH=loopback (the default on the embedded "
    "SQLite database).",
)


async def current_owner(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's owner, as AuthMiddleware found it."""
    owner = request.scope.get(OWNER_KEY)
    if not isinstance(owner, str):  # a route outside /v1 asked for a caller: there is none
        raise Unauthorized(f"this route needs an API key; {_HOW}")
    return owner


Owner = Annotated[str, Depends(current_owner)]
AUTHENTICATED = [Depends(current_owner)]  # for routes that need a caller but not its name


class BodyLimitMiddleware:
    """A 413 for a request body over ``OPTBENCH_MAX_REQUEST_BYTES``, from the Content-Length
    header or while the body streams in, before the route parses it. Data set uploads are
    left to their own limit (OPTBENCH_MAX_UPLOAD_BYTES, routes/datasets.py)."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ("/v1/datasets",)) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"].rstrip("/") in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_request_bytes
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await self._refuse(scope, receive, send, limit, int(length))
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await self._refuse(scope, receive, send, limit, None)
                return
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, limit: int, size: int | None
    ) -> None:
        if scope["path"].rstrip("/") == "/v1/jobs":
            JOBS_REJECTED.labels("too_large").inc()
        what = f"the request body is {size} bytes" if size is not None else "the request body"
        error = PayloadTooLarge(
            f"{what}; the limit is {limit} bytes (OPTBENCH_MAX_REQUEST_BYTES): send a smaller "
            "job spec (fewer optimizer entries, seeds or schedule settings); data sets go to "
            "POST /v1/datasets, whose limit is OPTBENCH_MAX_UPLOAD_BYTES",
            limit_bytes=limit,
        )
        response = problem(error.status, error.title, error.detail, error.code, **error.extra)
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


def install(app: FastAPI) -> None:
    """Add the middleware (Starlette runs the last added first)."""
    settings = get_settings()
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthMiddleware)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After", "X-Next-Cursor", "Content-Disposition"],
        )
    if settings.allowed_host_list != ["*"]:
        app.add_middleware(
            TrustedHostMiddleware, allowed_hosts=settings.allowed_host_list, www_redirect=False
        )
    # Outermost: every layer inside sees the client a trusted proxy forwarded.
    app.add_middleware(ForwardedMiddleware, trusted=settings.forwarded_allow_networks)
