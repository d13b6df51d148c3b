"""API keys: create, list, revoke, and authenticate a request's key.

A key is ``ob_<id>_<secret>``: ``ob_`` makes it recognisable (in a leaked log or a secret
scanner), ``<id>`` is 12 hex characters that name the key (``optbench keys list``/``revoke``)
and find its row, ``<secret>`` is 32 random bytes, URL-safe base64. The database keeps the
SHA-256 of the secret only, never the key: a copy of the database lets nobody in. A plain
hash is enough because the secret is random and 256 bits long (nothing to guess from a
dictionary); the stored and the computed hash are compared in constant time.

Every key belongs to an *owner* (a name such as ``alice`` or ``team-vision``); jobs and
uploaded data sets belong to the owner of the key that created them, and several keys of one
owner see the same jobs. Revoking a key takes effect on its next request.

No FastAPI here: services/api/security.py reads the header and calls ``authenticate``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from services.db.models import ApiKey, utcnow
from services.db.session import unit_of_work
from services.errors import InvalidSpec, NotFound

PREFIX = "ob_"
LOCAL_OWNER = "local"  # keyless requests from this machine (OPTBENCH_AUTH=loopback)
OWNER_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_ID_HEX = 12
_SECRET_BYTES = 32
_KEY_RULE = re.compile(rf"{PREFIX}([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")
# last_used_at is written at most this often per key: not a database write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``token`` is the key itself, shown this once."""

    id: str
    owner: str
    token: str
    created_at: datetime


def check_owner(owner: str) -> str:
    if not OWNER_RULE.fullmatch(owner):
        raise InvalidSpec(
            f"owner: '{owner}' is not a valid owner name; use 1 to 128 letters, digits and "
            "_ . @ - (starting with a letter or digit)"
        )
    return owner


def create_key(owner: str) -> NewKey:
    """A new key for ``owner``; its token is returned here and never again."""
    check_owner(owner)
    key_id = secrets.token_hex(_ID_HEX // 2)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).decode().rstrip("=")
    row = ApiKey(id=key_id, owner=owner, secret_sha256=_digest(secret))
    with unit_of_work() as session:
        session.add(row)
        session.flush()
    return NewKey(key_id, owner, f"{PREFIX}{key_id}_{secret}", row.created_at)


def list_keys(owner: str | None = None) -> list[ApiKey]:
    """Every key (of ``owner``), oldest first, revoked ones included. Hashes only."""
    with unit_of_work() as session:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if owner is not None:
            query = query.where(ApiKey.owner == owner)
        return list(session.scalars(query))


def revoke_key(key_id: str) -> ApiKey:
    """Revoke a key by its id (or by the key itself); revoking twice keeps the first time."""
    parsed = parse(key_id)
    key_id = parsed[0] if parsed else key_id
    with unit_of_work() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key with id '{key_id}'; `optbench keys list` shows them")
        row.revoked_at = row.revoked_at or utcnow()
        return row


def parse(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    match = _KEY_RULE.fullmatch(token)
    return (match[1], match[2]) if match else None


def authenticate(token: str) -> str | None:
    """The owner of a valid, unrevoked key; None for anything else (malformed, unknown,
    revoked, wrong secret), without saying which."""
    parsed = parse(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    with unit_of_work() as session:
        row = session.get(ApiKey, key_id)
        # Compared even when there is no such key, so both take the same time.
        stored = row.secret_sha256 if row is not None else _digest("")
        if not hmac.compare_digest(stored, _digest(secret)) or row is None or row.revoked_at:
            return None
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            row.last_used_at = now
        return row.owner


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
