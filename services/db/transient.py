"""Which database errors are transient: worth retrying the same transaction a moment later.

Transient means *the connection*, never the statement: PostgreSQL could not be reached or
the connection to it was lost, so the transaction did not commit (or, if the connection broke
during COMMIT, may have: the writes that retry are idempotent). Precisely:

- SQLAlchemy's ``DBAPIError`` (``OperationalError``, ``InterfaceError``, ...) with
  ``connection_invalidated``: SQLAlchemy found the connection closed or broken (server closed
  the connection, connection lost in the middle of a statement, a COPY or the COMMIT);
- a psycopg ``OperationalError`` without an SQLSTATE (what libpq raises when it cannot
  connect: connection refused, connection timeout, host unreachable, or loses the
  connection), bare or wrapped by SQLAlchemy;
- an SQLSTATE of class 08 (connection exception) or 57P01 ``admin_shutdown``, 57P02
  ``crash_shutdown``, 57P03 ``cannot_connect_now`` (the database is starting up or shutting
  down).

Everything else is not: an integrity error, a syntax error, a missing table, a cancelled or
timed-out statement, a deadlock, a full disk, and every SQLite error (SQLite has no connection
to lose; "database is locked" has already waited 30 s). Those fail at once.
"""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError

# SQLSTATEs that mean the server went away or is not taking connections yet.
_SERVER_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03"})


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says only that the database could not be reached (see the module)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        cause: BaseException = error.orig  # type: ignore[assignment]
    else:
        cause = error
    if not isinstance(cause, psycopg.Error):
        return False
    state = cause.sqlstate
    if state is None:
        return isinstance(cause, psycopg.OperationalError)
    return state.startswith("08") or state in _SERVER_UNAVAILABLE


def describe(error: BaseException) -> str:
    """The error for a log line: its driver's class and SQLSTATE only. A driver's message can
    name the database's host and port (never logged, as the API does with its 503s)."""
    cause = getattr(error, "orig", None) or error
    state = getattr(cause, "sqlstate", None)
    return type(cause).__name__ + (f" (SQLSTATE {state})" if state else "")
