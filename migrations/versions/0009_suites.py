"""suite table; job.suite_id, job.suite_workload, job.suite_study: suites (issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suite",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "spec",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_suite_owner_created", "suite", ["owner", "created_at"])
    op.create_index(
        "ux_suite_owner_idempotency_key", "suite", ["owner", "idempotency_key"], unique=True
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("suite_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("suite_workload", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("suite_study", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_job_suite_id_suite", "suite", ["suite_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_job_suite_id", ["suite_id"])


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_suite_id")
        batch.drop_constraint("fk_job_suite_id_suite", type_="foreignkey")
        for column in ("suite_study", "suite_workload", "suite_id"):
            batch.drop_column(column)
    op.drop_index("ux_suite_owner_idempotency_key", table_name="suite")
    op.drop_index("ix_suite_owner_created", table_name="suite")
    op.drop_table("suite")
