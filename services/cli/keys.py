"""``optbench keys create | list | revoke``: API keys in the configured database
(services/auth.py). Whoever can run these there is an operator, not an API caller."""

from __future__ import annotations

import sys

import click

from services.cli.base import (
    OK,
    cli,
    json_option,
    migrate_if_embedded,
    no_color_option,
    print_json,
    show,
)
from services.console import keys_table


@cli.group(short_help="Create, list and revoke API keys.")
def keys() -> None:
    """API keys in the configured database: a new key (printed once), the keys (never the
    key itself), revoke one."""


@keys.command(short_help="A new key for an owner, printed once.")
@click.option("--owner", required=True, help="Who the key acts for, e.g. alice.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "owner", "key"}.')
def create(owner: str, as_json: bool) -> int:
    """A new key for OWNER: printed once on standard output, never shown again."""
    from services import auth

    migrate_if_embedded()
    key = auth.create_key(owner)
    if as_json:
        print_json({"id": key.id, "owner": key.owner, "key": key.token})
        return OK
    print(key.token)
    print(
        f"key {key.id} for owner '{key.owner}': store it now, it is not shown again "
        "(clients send it as OPTBENCH_API_KEY or Authorization: Bearer ...)",
        file=sys.stderr,
    )
    return OK


@keys.command("list", short_help="Keys: id, owner, dates (never the key).")
@click.option("--owner", help="Only this owner's keys.")
@json_option
@no_color_option
def list_keys(owner: str | None, as_json: bool) -> int:
    """The keys (id, owner, created, last used, revoked; UTC), never a key itself."""
    from services import auth

    migrate_if_embedded()
    listed = [
        {
            "id": row.id,
            "owner": row.owner,
            "created_at": row.created_at,
            "last_used_at": row.last_used_at,
            "revoked_at": row.revoked_at,
        }
        for row in auth.list_keys(owner)
    ]
    if as_json:
        print_json(listed)
    else:
        show(keys_table(listed))
    return OK


@keys.command(short_help="Revoke a key: it is refused from then on.")
@click.argument("key_id", metavar="ID")
def revoke(key_id: str) -> int:
    """Revoke the key with ID (from `optbench keys list`): refused from its next request on."""
    from services import auth

    migrate_if_embedded()
    row = auth.revoke_key(key_id)
    print(f"key {row.id} of owner '{row.owner}' revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    return OK
