"""The answer cache of ``whyclip generate``: one row per chat-completions request (keyed by
the sha256 of base URL, model, full prompt and parameters), with the raw answer and its
provenance; never an API key.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_answers",
        sa.Column("request_sha256", sa.String(64), primary_key=True),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("llm_answers")
