"""Prompts stored exactly as embedded, with the rule that made them: libraries gain
``prompt_rule``; the descriptor prompts and class baseline prompts that older whyclips left
empty (``""``: "the template renders it") are filled by rendering them with rule version 1,
the rules those whyclips applied.

Revision ID: 0004
Revises: 0003
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import TableClause

from whyclip.store.method.prompts import RULES, rule_name

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RULE = 1  # the rules every whyclip before this revision built prompts with
BATCH = 10_000

libraries = sa.table(
    "libraries", sa.column("id"), sa.column("template"), sa.column("baseline_template"), sa.column("prompt_rule")
)
classes = sa.table("classes", sa.column("id"), sa.column("library_id"), sa.column("name"), sa.column("baseline_prompt"))
descriptors = sa.table(
    "descriptors",
    sa.column("id"),
    sa.column("library_id"),
    sa.column("class_id"),
    sa.column("text"),
    sa.column("prompt"),
)


def _update(conn: Connection, table: TableClause, column: str, values: list[dict[str, Any]]) -> None:
    stmt = table.update().where(table.c.id == sa.bindparam("row_id")).values({column: sa.bindparam("filled")})
    for start in range(0, len(values), BATCH):
        conn.execute(stmt, values[start : start + BATCH])


def upgrade() -> None:
    with op.batch_alter_table("libraries") as batch:  # adds only: no table copy
        batch.add_column(sa.Column("prompt_rule", sa.String(32), nullable=True))
    conn = op.get_bind()
    rules = RULES[RULE]
    for lib_id, template, baseline in conn.execute(
        sa.select(libraries.c.id, libraries.c.template, libraries.c.baseline_template)
    ):
        empty_baselines = conn.execute(
            sa.select(classes.c.id, classes.c.name).where(
                classes.c.library_id == lib_id, classes.c.baseline_prompt == ""
            )
        ).all()
        _update(
            conn,
            classes,
            "baseline_prompt",
            [{"row_id": i, "filled": rules.baseline(baseline, name)} for i, name in empty_baselines],
        )
        empty_prompts = conn.execute(
            sa.select(descriptors.c.id, classes.c.name, descriptors.c.text)
            .join(classes, classes.c.id == descriptors.c.class_id)
            .where(descriptors.c.library_id == lib_id, descriptors.c.prompt == "")
        ).all()
        _update(
            conn,
            descriptors,
            "prompt",
            [{"row_id": i, "filled": rules.prompt(template, name, text)} for i, name, text in empty_prompts],
        )
        conn.execute(libraries.update().where(libraries.c.id == lib_id).values(prompt_rule=rule_name(template, RULE)))
