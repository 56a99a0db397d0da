"""The store's schema history (Alembic revisions in ``versions/``) and the code that applies it.

:func:`upgrade` runs every pending revision on the caller's connection, inside the caller's
write transaction (store/db/engine.py makes SQLite's DDL transactional, and PostgreSQL's
is), so a migration applies whole or not at all. :func:`state` reads where a database
stands without writing anything, for read commands, which never migrate.

Stores written before Alembic recorded ``schema_version`` 1..3 in the ``meta`` table;
:data:`LEGACY` maps each to the revision that reproduces it, and the first upgrade stamps
that revision and removes the old key.

Adding a revision: write ``versions/NNNN_what.py`` (copy the newest one's header:
``revision = "NNNN"``, ``down_revision`` = the previous id, an ``upgrade()`` using
``alembic.op`` and ``sa.table`` stand-ins, never the ORM models, which move on), change the
models in ``schema.py`` to match, and run the tests (``tests/test_migrations.py`` checks that
a fresh store built by the revisions equals the models). On SQLite never batch-recreate a
table other tables reference (libraries, classes, eval_runs): dropping the old copy would
cascade deletes; add columns instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:  # alembic is imported only when a migration is looked at
    from alembic.config import Config
    from alembic.script import ScriptDirectory

LEGACY = {1: "0001", 2: "0002", 3: "0003"}  # meta schema_version -> revision
HERE = Path(__file__).parent


class NewerStore(Exception):
    """The database names a revision this whyclip does not know."""

    def __init__(self, revision: str):
        super().__init__(revision)
        self.revision = revision


@dataclass(frozen=True)
class State:
    current: str | None  # None: an empty database
    head: str
    pending: tuple[tuple[str, str], ...]  # (revision, its first docstring line), oldest first

    @property
    def up_to_date(self) -> bool:
        return not self.pending


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(HERE), version_locations=[str(HERE / "versions")])


def alembic_config(conn: Connection) -> Config:
    """Alembic's configuration for this package, bound to ``conn`` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("version_locations", str(HERE / "versions"))
    config.attributes["connection"] = conn
    return config


def current_revision(conn: Connection) -> str | None:
    """The database's revision: Alembic's, or the one its legacy ``schema_version`` maps to;
    None for an empty database. Raises :class:`NewerStore` for one this code does not know."""
    found = inspect(conn)
    rev: str | None
    if found.has_table("alembic_version"):
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    elif found.has_table("meta"):
        row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
        if row is None:
            return None
        if int(row) not in LEGACY:
            raise NewerStore(f"schema {row}")
        rev = LEGACY[int(row)]
    else:
        return None
    if rev is None:
        return None
    if rev not in {s.revision for s in _script().walk_revisions()}:
        raise NewerStore(rev)
    return rev


def state(conn: Connection) -> State:
    """Where the database stands and what :func:`upgrade` would apply; writes nothing."""
    script = _script()
    current = current_revision(conn)
    head = script.get_current_head()
    assert head is not None  # the package ships its revisions
    pending = list(script.iterate_revisions(head, current or "base"))  # newest first
    steps = tuple((s.revision, (s.doc or "").strip().splitlines()[0] if s.doc else "") for s in reversed(pending))
    return State(current, head, steps)


def upgrade(conn: Connection) -> State:
    """Apply every pending revision on ``conn``, inside its transaction (the caller commits
    or rolls back); return the state before. A legacy store is first stamped at its revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    before = state(conn)
    if before.up_to_date:
        return before
    found = inspect(conn)
    if before.current is not None and not found.has_table("alembic_version"):
        MigrationContext.configure(conn).stamp(_script(), before.current)
        conn.execute(text("DELETE FROM meta WHERE key = 'schema_version'"))
    command.upgrade(alembic_config(conn), "head")
    return before
