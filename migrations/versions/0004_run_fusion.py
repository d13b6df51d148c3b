"""run.fused and run.fusion: whether a run trained in a fused group, and why not

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 03:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("fused", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("fusion", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("fusion")
        batch.drop_column("fused")
