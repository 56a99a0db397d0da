"""Calibrations of a library version's probabilities (``whyclip calibrate``): temperature,
per-class biases, the run and split they were fitted on, and the held-out figures.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("aggregate", sa.String(32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("fit_fraction", sa.Float(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("biases", sa.Text(), nullable=True),
        sa.Column("ece_before", sa.Float(), nullable=False),
        sa.Column("ece_after", sa.Float(), nullable=False),
        sa.Column("nll_before", sa.Float(), nullable=False),
        sa.Column("nll_after", sa.Float(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_calibrations_library_aggregate", "calibrations", ["library_id", "aggregate"])
    op.create_index("ix_calibrations_run_id", "calibrations", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_calibrations_run_id", "calibrations")
    op.drop_index("ix_calibrations_library_aggregate", "calibrations")
    op.drop_table("calibrations")
