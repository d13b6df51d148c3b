"""run.role, run.trial, run.pruned_at_epoch, run.selection_score: tuning studies

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), server_default="run", nullable=False)
        )
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pruned_at_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("selection_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        for column in ("selection_score", "pruned_at_epoch", "trial", "role"):
            batch.drop_column(column)
