"""Write transactions for the store's writers: the lock first, errors in one line.

Every writer (an ingest publishing a version, the embedding cache, ``delete``, ``gc``)
goes through :func:`write_session`: a Session on a connection that took the store's write
lock with its first statement (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL; see :func:`whyclip.store.db.engine.begin_write`). Versions and keys read inside
it cannot be taken by another writer before it commits. A database that stays locked past
the busy timeout, or a connection lost mid-write, becomes a :class:`StoreError` that says
what happened and what to do, never a driver traceback; nothing of the transaction remains.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Insert

from whyclip.store.db import engine as engines
from whyclip.store.db.engine import begin_write
from whyclip.store.db.schema import Base
from whyclip.store.errors import StoreError


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]


def write_error(exc: sa_exc.SQLAlchemyError, what: str) -> StoreError:
    """The one line a failed write gives: what was being written, why it failed, the fix."""
    reason = _first_line(exc)
    if "locked" in reason or "busy" in reason:
        return StoreError(
            f"could not {what}: the database stayed locked by another whyclip writer for over "
            f"{engines.BUSY_TIMEOUT_S}s (a long ingest or gc); nothing was written: run the command again when "
            "it has finished"
        )
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(
            f"could not {what}: another writer changed the same rows at the same moment ({reason}); "
            "nothing was written: run the command again"
        )
    return StoreError(f"could not {what}: the database refused the write ({reason}); nothing was written")


@contextmanager
def write_session(engine: Engine, what: str) -> Iterator[Session]:
    """A Session inside one locked write transaction, committed when the block ends
    (rolled back on any error). ``what`` completes "could not ..." in the error line."""
    try:
        with begin_write(engine) as conn, Session(bind=conn) as s:
            yield s
            s.flush()
    except sa_exc.SQLAlchemyError as exc:
        raise write_error(exc, what) from None


def insert_or_ignore(engine: Engine, table: type[Base], index_elements: list[str]) -> Insert:
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` for SQLite and PostgreSQL:
    a row another writer inserted first is kept, and this insert is not an error."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(engine.dialect.name)
    if dialect is None:
        raise StoreError(
            f"whyclip's cache needs SQLite or PostgreSQL, not {engine.dialect.name}: use a sqlite:/// or "
            "postgresql+psycopg:// URL"
        )
    statement: Insert = dialect.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return statement


def rowcount(result: object) -> int:
    """The rows an UPDATE or DELETE matched (``Session.execute`` is typed as giving a plain
    ``Result``; for such a statement it is a ``CursorResult``)."""
    assert isinstance(result, CursorResult)
    return result.rowcount
