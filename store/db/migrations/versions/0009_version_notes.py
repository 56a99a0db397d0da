"""Library versions carry a note, what their author said about them.

``whyclip whatif --save-as-version --note TEXT`` stores the edit's reason there; older
versions have none.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("libraries") as batch:  # adds only: no table copy
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+, which whyclip requires, and
    # PostgreSQL): a batch copy of ``libraries`` would drop the parent table, and with foreign
    # keys on, SQLite's ON DELETE CASCADE would empty every version's classes and descriptors.
    op.drop_column("libraries", "note")
