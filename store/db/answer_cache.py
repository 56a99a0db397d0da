"""The LLM answer cache: chat-completions answers by the sha256 of their request.

``whyclip generate`` looks every request up here before sending it and saves every answer,
so a rerun sends nothing. Saving is insert-or-ignore: two processes that asked the same
question both keep going, and the first answer stored is the one kept.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from whyclip.store.db.schema import LLMAnswerRow

LOOKUP_BATCH = 500


@dataclass(frozen=True)
class CachedAnswer:
    """An answer as stored: the request it answers and its raw text."""

    request_sha256: str
    base_url: str
    model: str
    prompt: str
    parameters: dict[str, Any]
    answer: str
    mode: str
    created_at: dt.datetime


def lookup(engine: Engine, keys: Sequence[str]) -> dict[str, CachedAnswer]:
    """The cached answers of those of ``keys`` that have one."""
    keys = list(dict.fromkeys(keys))
    found: dict[str, CachedAnswer] = {}
    with Session(engine) as s:
        for start in range(0, len(keys), LOOKUP_BATCH):
            rows = s.scalars(
                select(LLMAnswerRow).where(LLMAnswerRow.request_sha256.in_(keys[start : start + LOOKUP_BATCH]))
            )
            for r in rows:
                found[r.request_sha256] = CachedAnswer(
                    r.request_sha256,
                    r.base_url,
                    r.model,
                    r.prompt,
                    json.loads(r.parameters),
                    r.answer,
                    r.mode,
                    r.created_at,
                )
    return found


def save(engine: Engine, answers: Sequence[CachedAnswer]) -> None:
    """Store answers in one transaction; a key already there (another process) is left as it is."""
    rows = list(
        {
            a.request_sha256: {
                "request_sha256": a.request_sha256,
                "base_url": a.base_url,
                "model": a.model,
                "prompt": a.prompt,
                "parameters": json.dumps(a.parameters, sort_keys=True),
                "answer": a.answer,
                "mode": a.mode,
                "created_at": a.created_at,
            }
            for a in answers
        }.values()
    )
    if not rows:
        return
    module = {"sqlite": sqlite, "postgresql": postgresql}.get(engine.dialect.name)
    if module is not None:
        with Session(engine) as s, s.begin():
            s.execute(module.insert(LLMAnswerRow).on_conflict_do_nothing(index_elements=["request_sha256"]), rows)
        return
    for row in rows:  # other databases: one row at a time, a duplicate key skipped
        try:
            with Session(engine) as s, s.begin():
                s.execute(insert(LLMAnswerRow), [row])
        except IntegrityError:
            pass
