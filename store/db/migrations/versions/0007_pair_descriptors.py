"""Contrastive pair descriptors (FuDD): class pairs of a library version, each with paired
descriptions for both classes, their prompts and vectors, and the LLM provenance; kept apart
from the classes' own descriptor lists.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "class_pairs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("class_a", sa.Integer(), nullable=False),
        sa.Column("class_b", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("encoder_key", sa.String(300), nullable=False),
        sa.UniqueConstraint("library_id", "class_a", "class_b"),
    )
    op.create_index("ix_class_pairs_library_id", "class_pairs", ["library_id"])
    op.create_table(
        "pair_descriptors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pair_id", sa.Integer(), sa.ForeignKey("class_pairs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("feature", sa.Integer(), nullable=False),
        sa.Column("class_position", sa.Integer(), nullable=False),
        sa.Column("attribute", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
    )
    op.create_index("ix_pair_descriptors_pair", "pair_descriptors", ["pair_id", "feature"])


def downgrade() -> None:
    op.drop_index("ix_pair_descriptors_pair", "pair_descriptors")
    op.drop_table("pair_descriptors")
    op.drop_index("ix_class_pairs_library_id", "class_pairs")
    op.drop_table("class_pairs")
