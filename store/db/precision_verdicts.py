"""Precision verdicts in the store: an encoder checks a lower precision (and its
prefix-sharing text path) against fp32 once, and every later process with the same
weights, precision, path, check rule and platform takes the verdict from here.

What makes a verdict valid is what decides the rounding: the weights (the content id), the
precision, the code path, the rule (sample size, cosine floors) and the platform (torch's
and transformers' versions, the backend, the CPU's instruction set and native bf16, or the
GPU model): the same weights under another torch or on another CPU are checked again. The
key is the sha256 of those fields, so no field's length limits it; the fields are kept in
their columns for people reading the table. Deleting a row makes the next process check
again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from whyclip.store.db.schema import PrecisionVerdictRow
from whyclip.store.db.writes import insert_or_ignore, rowcount, write_session
from whyclip.store.errors import StoreError

if TYPE_CHECKING:
    from whyclip.store.catalogue import Store

log = logging.getLogger(__name__)
FIELDS = ("encoder_id", "modality", "precision", "path", "rule", "platform")


def key_sha256(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps({f: key[f] for f in FIELDS}, sort_keys=True).encode()).hexdigest()


class StoreVerdicts:
    """The verdict book an encoder reads and writes (``get``/``put``), over a store. A
    failed write is logged and forgotten: the check runs again next time, nothing is lost."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: dict[str, str]) -> tuple[bool, float] | None:
        with Session(self.store.engine) as s:
            row = s.get(PrecisionVerdictRow, key_sha256(key))
            return (bool(row.passed), float(row.cosine)) if row is not None else None

    def put(self, key: dict[str, str], passed: bool, cosine: float) -> None:
        row = {
            "key_sha256": key_sha256(key),
            **{f: key[f] for f in FIELDS},
            "passed": bool(passed),
            "cosine": float(cosine),
            "created_at": dt.datetime.now(dt.timezone.utc),
        }
        try:
            with write_session(self.store.engine, "save a precision verdict") as s:
                s.execute(insert_or_ignore(self.store.engine, PrecisionVerdictRow, ["key_sha256"]), [row])
        except (StoreError, sa_exc.SQLAlchemyError) as exc:
            log.warning("precision verdict not saved (the check runs again next time): %s", exc)

    def all(self) -> list[dict[str, Any]]:
        with Session(self.store.engine) as s:
            rows = s.scalars(select(PrecisionVerdictRow).order_by(PrecisionVerdictRow.created_at)).all()
            return [{f: getattr(r, f) for f in (*FIELDS, "passed", "cosine")} for r in rows]

    def forget(self, encoder_id: str | None = None) -> int:
        """Delete the verdicts (of one encoder id): the next process checks again."""
        with write_session(self.store.engine, "delete precision verdicts") as s:
            q = delete(PrecisionVerdictRow)
            if encoder_id is not None:
                q = q.where(PrecisionVerdictRow.encoder_id == encoder_id)
            return rowcount(s.execute(q))
