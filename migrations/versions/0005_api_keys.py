"""api_key: hashed API keys per owner; an index on dataset (owner, created_at)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_api_key_owner"), "api_key", ["owner"], unique=False)
    op.create_index("ix_dataset_owner_created", "dataset", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dataset_owner_created", table_name="dataset")
    op.drop_index(op.f("ix_api_key_owner"), table_name="api_key")
    op.drop_table("api_key")
