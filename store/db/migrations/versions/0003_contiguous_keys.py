"""Contiguous descriptor keys (meta schema_version 3): libraries record their retrieval
parameters and first descriptor key; descriptors lose the (class, position) and (library)
indexes and the norm column (the index files keep the norms).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("libraries") as batch:  # adds only: no table copy
        batch.add_column(sa.Column("index_params", sa.Text(), nullable=True))
        batch.add_column(sa.Column("first_descriptor_id", sa.Integer(), nullable=True))
    op.drop_index("ix_descriptors_class_position", table_name="descriptors")
    op.drop_index("ix_descriptors_library_id", table_name="descriptors")
    # descriptors is referenced by no table, so the batch copy (new table, rows copied,
    # old dropped, new renamed) cascades nothing; it runs in the migration's transaction
    with op.batch_alter_table("descriptors") as batch:
        batch.drop_column("norm")
