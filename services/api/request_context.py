"""Every request gets an id, and an error nobody handled becomes a 500 problem logged by its
class and that id, never by its message.

- **The id**: the client's ``X-Request-ID`` when it is a plain token (1 to 64 letters,
  digits, ``.``, ``_``, ``-``: nothing that could forge a log line), else a new random one.
  It is sent back in ``X-Request-ID`` on every response, in the body of a 500, and in every
  line this module and ``services/api/errors.py`` log (``current_request_id``).
- **An unhandled error**: logged at ERROR with the request's method and path (no query
  string), the id, the error's class and the classes it was raised from, and the traceback's
  frames (file, line, code): never ``str(error)``, which for a database error holds the SQL
  and its parameters, the spec's values among them. The client gets a 500 problem naming the
  id to quote. The error does not propagate to the server (uvicorn would log it whole).

Installed outermost (after every other middleware), so that errors of the others are caught too.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from contextvars import ContextVar

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("services.api.errors")
HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The id of the request being served ("-" outside one); threads the route runs in see
    it too (anyio copies the context)."""
    return _request_id.get()


def error_classes(error: BaseException) -> str:
    """``IntegrityError (from UniqueViolation)``: the class and the chain below it."""
    names, seen, cause = [type(error).__name__], {id(error)}, error.__cause__ or error.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    return names[0] + (f" (from {' from '.join(names[1:])})" if len(names) > 1 else "")


def _frames(error: BaseException) -> str:
    return "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(HEADER, "")
        request_id = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            log.error(
                "unhandled %s in %s %s (request %s); traceback frames:\n%s",
                error_classes(error),
                scope.get("method", "?"),
                scope.get("path", "?"),
                request_id,
                _frames(error),
            )
            if not started:  # else the connection just ends: a body cannot be taken back
                from services.api.errors import problem

                response = problem(
                    500,
                    "Internal Server Error",
                    f"an unexpected error; it is logged as request {request_id}: quote that id",
                    "internal-error",
                    request_id=request_id,
                )
                await response(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


def install(app: FastAPI) -> None:
    """Call last in create_app: middleware added later wraps what was added before."""
    app.add_middleware(RequestContext)
