"""step_rollup: per-block min/max/last of the step fields, for downsampled reads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 02:30:00.000000

On PostgreSQL the table is filled from the step rows already stored (the write path keeps it
up to date from then on); on SQLite it stays empty (SQLite reads always scan the rows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (frozen here: later changes to the models must not change it).
BLOCK = 64
INTEGER_FIELDS = ("epoch",)
FLOAT_FIELDS = (
    "loss",
    "accuracy",
    "lr",
    "grad_norm",
    "train_seconds",
    "x",
    "y",
    "val_loss",
    "val_accuracy",
)
FIELDS = INTEGER_FIELDS + FLOAT_FIELDS


def upgrade() -> None:
    columns: list[sa.Column[object]] = []
    for name in FIELDS:
        kind = sa.Integer() if name in INTEGER_FIELDS else sa.Float()
        columns += [
            sa.Column(f"{name}_{part}", kind, nullable=True) for part in ("min", "max", "last")
        ]
    op.create_table(
        "step_rollup",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "block"),
    )
    if op.get_bind().dialect.name == "postgresql":
        names = ", ".join(f"{f}_min, {f}_max, {f}_last" for f in FIELDS)
        aggregates = ", ".join(
            f"min({f}), max({f}), (array_agg({f} ORDER BY step DESC))[1]" for f in FIELDS
        )
        op.execute(
            f"INSERT INTO step_rollup (run_id, block, first_step, last_step, {names}) "
            f"SELECT run_id, (step - 1) / {BLOCK}, min(step), max(step), {aggregates} "
            "FROM step_metric GROUP BY 1, 2"
        )


def downgrade() -> None:
    op.drop_table("step_rollup")
