"""worker_catalog: the plugin optimizers each live worker can train; run.optimizer widened
for plugin names ("pytorch_optimizer:ScheduleFreeAdamW")

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "worker_catalog",
        sa.Column("worker", sa.String(length=200), primary_key=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("optimizers", _JSON, nullable=False),
    )
    op.create_index("ix_worker_catalog_published_at", "worker_catalog", ["published_at"])
    with op.batch_alter_table("run") as batch:
        batch.alter_column(
            "optimizer", type_=sa.String(length=100), existing_type=sa.String(length=32)
        )


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.alter_column(
            "optimizer", type_=sa.String(length=32), existing_type=sa.String(length=100)
        )
    op.drop_index("ix_worker_catalog_published_at", table_name="worker_catalog")
    op.drop_table("worker_catalog")
