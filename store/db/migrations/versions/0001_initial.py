"""The first schema (meta schema_version 1): libraries, classes, descriptors (with their
norms), texts shared by classes, the embedding cache, and the store's id.

Frozen: the tables as whyclip first wrote them, never the current models.

Revision ID: 0001
Revises:
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "libraries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("encoder_id", sa.String(300), nullable=False),
        sa.Column("encoder_name", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("logit_scale", sa.Float(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("baseline_template", sa.Text(), nullable=False),
        sa.Column("aggregate", sa.String(16), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=False),
        sa.Column("n_descriptors", sa.Integer(), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("index_key", sa.String(64), nullable=False),
        sa.Column("index_factory", sa.String(200), nullable=False),
        sa.Column("recall_at_10", sa.Float(), nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_libraries_name", "libraries", ["name"])
    op.create_table(
        "classes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("baseline_prompt", sa.Text(), nullable=False),
        sa.Column("n_descriptors", sa.Integer(), nullable=False),
    )
    op.create_index("ix_classes_library_position", "classes", ["library_id", "position"])
    op.create_table(
        "descriptors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("class_id", sa.Integer(), sa.ForeignKey("classes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("shared", sa.Integer(), nullable=False),
    )
    op.create_index("ix_descriptors_class_position", "descriptors", ["class_id", "position"])
    op.create_index("ix_descriptors_library_text", "descriptors", ["library_id", "text"])
    op.create_index("ix_descriptors_library_id", "descriptors", ["library_id"])
    op.create_table(
        "shared_texts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("classes", sa.Integer(), nullable=False),
        sa.Column("examples", sa.Text(), nullable=False),
    )
    op.create_index("ix_shared_texts_library_classes", "shared_texts", ["library_id", "classes"])
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("encoder_key", sa.String(300), nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
        sa.UniqueConstraint("encoder_key", "text_sha256"),
    )
    op.bulk_insert(meta, [{"key": "store_id", "value": uuid.uuid4().hex}])
