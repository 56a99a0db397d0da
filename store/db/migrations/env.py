"""Alembic's environment for the whyclip store: run by :func:`whyclip.store.db.migrations.upgrade`
on the connection it passes in ``config.attributes["connection"]``, inside that connection's
transaction, so every pending revision applies together or not at all."""

from alembic import context

from whyclip.store.db.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite's ALTER TABLE, through Alembic's batch (copy) mode
    transaction_per_migration=False,
    transactional_ddl=True,  # store/db/engine.py makes SQLite's DDL transactional
)
with context.begin_transaction():  # the caller's transaction: no commit here
    context.run_migrations()
