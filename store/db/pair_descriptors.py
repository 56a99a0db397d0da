"""Contrastive pair descriptors of a library version (FuDD's differential descriptions):
for a pair of classes (A, B), features each described once as A looks and once as B looks,
with the prompts exactly as embedded and their vectors, and the LLM's provenance.

They are stored beside a version, never in its classes' descriptor lists: class scores,
explanations' descriptor lists and retrieval never read them. A pair is written whole, its
vectors in its rows, in one transaction (readers see all of it or none); it is identified by
its content (class names, texts, prompts, encoder), so storing the same pair again changes
nothing, and different descriptions of a stored pair replace it only when asked to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from whyclip.store.db.schema import ClassPairRow, LibraryRow, PairDescriptorRow
from whyclip.store.db.writes import write_session
from whyclip.store.errors import InputError, LibraryNotFound


@dataclass(frozen=True)
class PairDescription:
    """One side of one feature: how ``class_position``'s class looks."""

    feature: int
    class_position: int
    attribute: str
    text: str
    prompt: str  # exactly as embedded


@dataclass(frozen=True)
class PairDraft:
    """A pair about to be stored: class positions in the version (any order), the
    descriptions of both sides with their unit vectors (rows of ``vectors``, same order)."""

    class_a: int
    class_b: int
    names: tuple[str, str]  # the class names, for the content hash
    descriptions: list[PairDescription]
    vectors: np.ndarray
    norms: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""
    model: str = ""
    question: str = ""
    request_sha256: str = ""
    generated_at: dt.datetime | None = None


@dataclass(frozen=True)
class StoredPair:
    """A stored pair as readers get it: ``class_a`` < ``class_b`` (positions)."""

    id: int
    class_a: int
    class_b: int
    content_sha256: str
    descriptions: list[PairDescription]
    vectors: np.ndarray  # (len(descriptions), dim) unit vectors
    source: dict[str, Any]
    base_url: str
    model: str
    question: str
    request_sha256: str
    generated_at: dt.datetime | None
    stored_at: dt.datetime
    encoder_key: str

    def side(self, position: int) -> list[int]:
        """Rows of the descriptions of class ``position``."""
        return [i for i, d in enumerate(self.descriptions) if d.class_position == position]

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "question": self.question,
            "request_sha256": self.request_sha256,
            "source": self.source,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "stored_at": self.stored_at.isoformat(),
            "content_sha256": self.content_sha256,
        }


@dataclass(frozen=True)
class PairsWritten:
    added: list[tuple[str, str]] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)


def content_sha256(draft: PairDraft, encoder_key: str) -> str:
    """The identity of a pair's descriptions: its class names, each side's texts and
    prompts, and the encoder that embedded them (never a path or an order of processing)."""
    (na, a), (nb, b) = sorted([(draft.names[0], draft.class_a), (draft.names[1], draft.class_b)], key=lambda t: t[1])
    sides = {a: na, b: nb}
    body = {
        "classes": [na, nb],
        "encoder": encoder_key,
        "descriptions": [
            [d.feature, sides[d.class_position], d.attribute, d.text, d.prompt] for d in draft.descriptions
        ],
    }
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _check_version(s: Session, library_id: int) -> None:
    if s.get(LibraryRow, library_id) is None:
        raise LibraryNotFound(
            "the library version was deleted meanwhile: nothing was stored; store the pairs into a current version"
        )


def write_pairs(
    engine: Engine, library_id: int, encoder_key: str, drafts: list[PairDraft], *, replace: bool = False
) -> PairsWritten:
    """Store ``drafts`` into a version in one transaction. A pair stored with the same
    content is left as it is; one stored with other descriptions is refused (naming it)
    unless ``replace``, and then replaced whole. Nothing is written when anything is refused."""
    out = PairsWritten()
    with write_session(engine, "store pair descriptors") as s:
        _check_version(s, library_id)
        existing = {
            (r.class_a, r.class_b): r
            for r in s.scalars(select(ClassPairRow).where(ClassPairRow.library_id == library_id))
        }
        now = dt.datetime.now(dt.timezone.utc)
        for d in drafts:
            a, b = sorted((d.class_a, d.class_b))
            names = d.names if d.class_a < d.class_b else d.names[::-1]
            sha = content_sha256(d, encoder_key)
            old = existing.get((a, b))
            if old is not None and old.content_sha256 == sha:
                out.unchanged.append(names)
                continue
            if old is not None and not replace:
                raise InputError(
                    f"library version already has other pair descriptors for {names[0]!r} / {names[1]!r}: "
                    "pass --replace to replace them, or leave that pair out; nothing was stored"
                )
            if old is not None:
                s.execute(delete(PairDescriptorRow).where(PairDescriptorRow.pair_id == old.id))
                s.execute(delete(ClassPairRow).where(ClassPairRow.id == old.id))
                s.flush()
                out.replaced.append(names)
            else:
                out.added.append(names)
            row = ClassPairRow(
                library_id=library_id,
                class_a=a,
                class_b=b,
                content_sha256=sha,
                source=json.dumps(d.source),
                base_url=d.base_url,
                model=d.model,
                question=d.question,
                request_sha256=d.request_sha256,
                generated_at=d.generated_at,
                stored_at=now,
                encoder_key=encoder_key,
            )
            s.add(row)
            s.flush()
            existing[(a, b)] = row
            if d.descriptions:
                s.execute(
                    insert(PairDescriptorRow),
                    [
                        {
                            "pair_id": row.id,
                            "feature": x.feature,
                            "class_position": x.class_position,
                            "attribute": x.attribute,
                            "text": x.text,
                            "prompt": x.prompt,
                            "vector": np.asarray(v, dtype="<f4").tobytes(),
                            "norm": float(n),
                        }
                        for x, v, n in zip(d.descriptions, d.vectors, d.norms, strict=True)
                    ],
                )
    return out


def count_pairs(s: Session, library_id: int) -> int:
    return int(
        s.scalar(select(func.count()).select_from(ClassPairRow).where(ClassPairRow.library_id == library_id)) or 0
    )


def load_pairs(engine: Engine, library_id: int, dim: int, only: set[tuple[int, int]] | None = None) -> list[StoredPair]:
    """Every stored pair of a version (or ``only`` those (low, high) position pairs), by
    (class_a, class_b), descriptions in feature order."""
    if only is not None and not only:
        return []
    with Session(engine) as s:
        q = select(ClassPairRow).where(ClassPairRow.library_id == library_id)
        if only is not None:
            q = q.where(tuple_(ClassPairRow.class_a, ClassPairRow.class_b).in_(sorted(only)))
        pairs = s.scalars(q.order_by(ClassPairRow.class_a, ClassPairRow.class_b)).all()
        rows = (
            s.execute(
                select(PairDescriptorRow)
                .where(PairDescriptorRow.pair_id.in_([p.id for p in pairs]))
                .order_by(PairDescriptorRow.pair_id, PairDescriptorRow.feature, PairDescriptorRow.id)
            )
            .scalars()
            .all()
            if pairs
            else []
        )
        by_pair: dict[int, list[PairDescriptorRow]] = {}
        for r in rows:
            by_pair.setdefault(r.pair_id, []).append(r)
        out = []
        for p in pairs:
            mine = by_pair.get(p.id, [])
            vectors = (
                np.stack([np.frombuffer(r.vector, dtype="<f4") for r in mine]).astype(np.float32)
                if mine
                else np.zeros((0, dim), np.float32)
            )
            out.append(
                StoredPair(
                    p.id,
                    p.class_a,
                    p.class_b,
                    p.content_sha256,
                    [PairDescription(r.feature, r.class_position, r.attribute, r.text, r.prompt) for r in mine],
                    vectors,
                    json.loads(p.source or "{}"),
                    p.base_url,
                    p.model,
                    p.question,
                    p.request_sha256,
                    p.generated_at,
                    p.stored_at,
                    p.encoder_key,
                )
            )
        return out


def delete_pairs_of(s: Session, library_ids: list[int]) -> None:
    """Inside a version's deletion: its pairs and their descriptions."""
    pair_ids = select(ClassPairRow.id).where(ClassPairRow.library_id.in_(library_ids))
    s.execute(delete(PairDescriptorRow).where(PairDescriptorRow.pair_id.in_(pair_ids)))
    s.execute(delete(ClassPairRow).where(ClassPairRow.library_id.in_(library_ids)))
