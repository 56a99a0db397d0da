"""Precision verdicts: whether a lower precision (or the prefix-sharing text path) gives an
encoder's fp32 vectors, checked once per weights, precision, path, rule and platform, so
later processes skip the check.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precision_verdicts",
        sa.Column("key_sha256", sa.String(64), primary_key=True),
        sa.Column("encoder_id", sa.String(300), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("path", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("precision_verdicts")
