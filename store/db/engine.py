"""Database engines, set up so that transactions mean the same on SQLite and PostgreSQL.

pysqlite, left to itself, commits before every DDL statement and begins transactions
lazily, so a migration could half-apply and two writers could both read ``max(version)``
before either took the write lock. Here the driver is put in autocommit mode and SQLAlchemy
emits ``BEGIN`` itself (the recipe in SQLAlchemy's SQLite dialect documentation): DDL is
transactional, and :func:`begin_write` starts with ``BEGIN IMMEDIATE``, taking SQLite's
write lock before the first read. On PostgreSQL :func:`begin_write` takes a transaction-level
advisory lock instead, so writers that allocate versions and keys queue the same way.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine

from whyclip.store.errors import InputError, StoreError

BUSY_TIMEOUT_S = 60  # how long a SQLite writer waits for another's lock before failing
WRITE_LOCK_KEY = 0x77687963  # PostgreSQL advisory lock id for whyclip's writers ("whyc")
_IMMEDIATE = "whyclip_write"


def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    dbapi_conn.isolation_level = None  # no implicit BEGIN/COMMIT by the driver
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    _wal(dbapi_conn, cur)
    # Read pages through a memory map: the 10 rows of a library-wide retrieval at 1M
    # descriptors took 1.6 ms through read() calls and 1.0 ms mapped (address space only).
    cur.execute("PRAGMA mmap_size=1073741824")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cur.close()


def _wal(dbapi_conn: sqlite3.Connection, cur: sqlite3.Cursor) -> None:
    """Switch the database to WAL once. The switch needs the file to itself, and SQLite
    answers "database is locked" at once, without its busy handler, while another
    connection holds a lock (two processes opening a fresh store): so check first (a WAL
    database needs no switch) and retry the switch until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")


def _has_nul(parameters: object) -> bool:
    """Whether any text among one statement's parameters (a mapping or a sequence, or a list
    of them for an executemany) holds a NUL."""
    rows = parameters if isinstance(parameters, list) else [parameters]
    for row in rows:
        values = row.values() if isinstance(row, dict) else row if isinstance(row, (list, tuple)) else ()
        if any(type(v) is str and "\x00" in v for v in values):
            return True
    return False


def _refuse_nul(_conn: Connection, _cursor: object, _statement: str, parameters: object, *_rest: object) -> None:
    """No text with a NUL reaches the database: PostgreSQL refuses it (a driver error deep in a
    request), and SQLite's text functions stop at it (``LIKE '%<NUL>%'`` matches every row).
    The surfaces check names and searches first; this is the net under them."""
    if _has_nul(parameters):
        raise InputError("text with a NUL character (U+0000) cannot be stored or looked up: remove it")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite with the transactional set-up described above."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # bad URL, missing driver
        raise StoreError(f"cannot use database URL {url!r}: {exc}") from None
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the store's write lock from its first statement:
    versions and keys read inside it cannot be taken by another writer before it commits."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
            yield conn
