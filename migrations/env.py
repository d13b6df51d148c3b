"""Alembic environment: metadata from the models, URL from optbench's settings
(or from ``config.attributes["url"]`` when a caller passes one)."""

from __future__ import annotations

from alembic import context

from services.db.models import Base
from services.db.session import make_engine
from services.settings import get_settings

config = context.config
url = config.attributes.get("url") or get_settings().resolved_database_url


def run_migrations() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
