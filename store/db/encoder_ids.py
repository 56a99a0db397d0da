"""Encoder ids in the database: which ids the store holds, and renaming one id to another.

Libraries (``libraries.encoder_id``), the embedding cache (``embeddings.encoder_key``:
``<id>/<precision>``, images ``<id>/<precision>/image/<pixel rules>``) and evaluation runs
(``eval_runs.encoder_key``) name the encoder that made their vectors. When whyclip's id
scheme changes (the path-dependent ids before content ids), :func:`rename_encoder_id`
moves every row of an old id to the new one in one transaction. Deciding *that* an old id
is the same encoder is the caller's job (it needs the model: :mod:`whyclip.ingest.encoder.legacy_ids`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import SQLColumnExpression, and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from whyclip.store.db.schema import READY, EmbeddingRow, EvalRunRow, LibraryRow
from whyclip.store.db.writes import rowcount, write_session

log = logging.getLogger(__name__)


@dataclass
class Renamed:
    """Rows moved from one encoder id to another."""

    libraries: int = 0
    embeddings: int = 0
    duplicates: int = 0  # cache rows the new id already had (the existing row kept)
    eval_runs: int = 0


def _of(column: SQLColumnExpression[str], encoder_id: str) -> ColumnElement[bool]:
    """Rows whose key is ``encoder_id`` or starts with ``encoder_id/``."""
    prefix = encoder_id + "/"
    return or_(column == encoder_id, func.substr(column, 1, len(prefix)) == prefix)


def _renamed(column: SQLColumnExpression[str], old: str, new: str) -> ColumnElement[str]:
    """The key with its ``old`` id replaced by ``new`` (the ``/precision...`` tail kept)."""
    return literal(new) + func.substr(column, len(old) + 1)


def library_encoders(engine: Engine) -> dict[str, list[str]]:
    """Encoder id -> the recorded encoder names (model names or folders) of its libraries."""
    with Session(engine) as s:
        rows = s.execute(select(LibraryRow.encoder_id, LibraryRow.encoder_name).distinct()).all()
    out: dict[str, list[str]] = {}
    for encoder_id, name in rows:
        out.setdefault(encoder_id, []).append(name)
    return out


def cache_encoder_ids(engine: Engine) -> set[str]:
    """The encoder ids the embedding cache holds vectors of. A loose index scan (one seek
    per distinct key on the (encoder_key, text_sha256) index), not a scan of the table."""
    ids: set[str] = set()
    with Session(engine) as s:
        key = s.scalar(select(func.min(EmbeddingRow.encoder_key)))
        while key is not None:
            ids.add(key.split("/", 1)[0])
            key = s.scalar(select(func.min(EmbeddingRow.encoder_key)).where(EmbeddingRow.encoder_key > key))
    return ids


def libraries_with_encoder(engine: Engine, encoder_id: str) -> list[tuple[str, int]]:
    """(name, version) of the ready library versions built with ``encoder_id``, newest first."""
    with Session(engine) as s:
        q = (
            select(LibraryRow.name, LibraryRow.version)
            .where(LibraryRow.encoder_id == encoder_id, LibraryRow.status == READY)
            .order_by(LibraryRow.id.desc())
        )
        return [(name, int(version)) for name, version in s.execute(q)]


def rename_encoder_id(engine: Engine, old: str, new: str) -> Renamed:
    """Every row of encoder ``old`` becomes ``new``, in one transaction: libraries, cache
    keys (their precision tail kept) and evaluation runs. A cache row whose renamed key the
    new id already has is dropped and the existing row kept (same text, same encoder).
    It holds the store's write lock, as every cache save does, so no writer can insert a
    row under the new id between the check for clashes and the update."""
    if old == new:
        return Renamed()
    done = Renamed()
    with write_session(engine, f"rename encoder id {old} to {new}") as s:
        done.libraries = rowcount(
            s.execute(update(LibraryRow).where(LibraryRow.encoder_id == old).values(encoder_id=new))
        )
        other = aliased(EmbeddingRow)
        clash = exists().where(
            and_(
                other.encoder_key == _renamed(EmbeddingRow.encoder_key, old, new),
                other.text_sha256 == EmbeddingRow.text_sha256,
            )
        )
        done.duplicates = rowcount(
            s.execute(
                delete(EmbeddingRow)
                .where(_of(EmbeddingRow.encoder_key, old), clash)
                .execution_options(synchronize_session=False)
            )
        )
        done.embeddings = rowcount(
            s.execute(
                update(EmbeddingRow)
                .where(_of(EmbeddingRow.encoder_key, old))
                .values(encoder_key=_renamed(EmbeddingRow.encoder_key, old, new))
                .execution_options(synchronize_session=False)
            )
        )
        done.eval_runs = rowcount(
            s.execute(
                update(EvalRunRow)
                .where(_of(EvalRunRow.encoder_key, old))
                .values(encoder_key=_renamed(EvalRunRow.encoder_key, old, new))
                .execution_options(synchronize_session=False)
            )
        )
    log.info(
        "encoder id %s is now %s: %d libraries, %d cached vectors (%d already there), %d eval runs",
        old,
        new,
        done.libraries,
        done.embeddings,
        done.duplicates,
        done.eval_runs,
    )
    return done
