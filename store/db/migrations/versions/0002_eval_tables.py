"""Evaluation runs (meta schema_version 2): runs, their images with vectors, and results.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("library_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("encoder_key", sa.String(300), nullable=False),
        sa.Column("n_images", sa.Integer(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.UniqueConstraint("library_name", "name"),
    )
    op.create_index("ix_eval_runs_library_id", "eval_runs", ["library_id"])
    op.create_table(
        "eval_images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_eval_images_run_position", "eval_images", ["run_id", "position"])
    op.create_table(
        "eval_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("top", sa.Text(), nullable=False),
        sa.Column("true_score", sa.Float(), nullable=False),
        sa.Column("true_rank", sa.Integer(), nullable=False),
    )
    op.create_index("ix_eval_results_run_method", "eval_results", ["run_id", "method"])
