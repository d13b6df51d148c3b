"""job.idempotency_key (unique per owner), job.request_sha256, job.enqueued_at and
job.enqueue_attempts: one job per Idempotency-Key, and jobs the broker never took

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("enqueue_attempts", sa.Integer(), server_default="0", nullable=False)
        )
    # Jobs stored before this revision were sent when they were submitted.
    op.execute("UPDATE job SET enqueued_at = created_at, enqueue_attempts = 1")
    op.create_index(
        "ux_job_owner_idempotency_key", "job", ["owner", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_job_owner_idempotency_key", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("enqueue_attempts")
        batch.drop_column("enqueued_at")
        batch.drop_column("request_sha256")
        batch.drop_column("idempotency_key")
