"""The embedding cache: prompt vectors by (encoder key, sha256 of the text), in the database.

Batches are committed as they are embedded, so an interrupted ingest keeps its work and a
re-ingest of an edited library embeds only what changed. Writes are insert-or-ignore: two
ingests that embed the same prompt at once both succeed, and the row first written stays
(the same encoder key makes the same vector).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from whyclip.store.db.schema import EmbeddingRow
from whyclip.store.db.writes import insert_or_ignore, write_session

LOOKUP_BATCH = 500


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lookup(engine: Engine, encoder_key: str, texts: Sequence[str]) -> dict[str, tuple[np.ndarray, float]]:
    """Cached (unit vector, norm) for those of ``texts`` that have one."""
    keys = {text_key(t): t for t in texts}
    return {keys[sha]: hit for sha, hit in lookup_hashes(engine, encoder_key, list(keys)).items()}


def lookup_hashes(engine: Engine, encoder_key: str, shas: Sequence[str]) -> dict[str, tuple[np.ndarray, float]]:
    """Cached (unit vector, norm) by content hash (images are cached by their file's sha256)."""
    found: dict[str, tuple[np.ndarray, float]] = {}
    shas = list(dict.fromkeys(shas))
    with Session(engine) as s:
        for start in range(0, len(shas), LOOKUP_BATCH):
            rows = s.execute(
                select(EmbeddingRow.text_sha256, EmbeddingRow.vector, EmbeddingRow.norm).where(
                    EmbeddingRow.encoder_key == encoder_key,
                    EmbeddingRow.text_sha256.in_(shas[start : start + LOOKUP_BATCH]),
                )
            )
            for sha, blob, norm in rows:
                found[sha] = (np.frombuffer(blob, dtype="<f4"), float(norm))
    return found


def save(engine: Engine, encoder_key: str, texts: Sequence[str], vectors: np.ndarray, norms: np.ndarray) -> None:
    """Store one embedded batch, in its own transaction (committed on return)."""
    save_hashes(engine, encoder_key, [text_key(t) for t in texts], vectors, norms)


def save_hashes(engine: Engine, encoder_key: str, shas: Sequence[str], vectors: np.ndarray, norms: np.ndarray) -> None:
    """Store vectors by content hash (duplicates within the batch once, rows already cached
    kept as they are), committed on return."""
    rows = list(
        {
            sha: {
                "encoder_key": encoder_key,
                "text_sha256": sha,
                "vector": np.asarray(v, dtype="<f4").tobytes(),
                "norm": float(n),
            }
            for sha, v, n in zip(shas, vectors, norms, strict=True)
        }.values()
    )
    if rows:
        statement = insert_or_ignore(engine, EmbeddingRow, ["encoder_key", "text_sha256"])
        with write_session(engine, f"save {len(rows)} vectors to the embedding cache") as s:
            s.execute(statement, rows)


def count(engine: Engine, encoder_key: str | None = None) -> int:
    with Session(engine) as s:
        q = select(func.count()).select_from(EmbeddingRow)
        if encoder_key is not None:
            q = q.where(EmbeddingRow.encoder_key == encoder_key)
        return int(s.scalar(q) or 0)
