"""Evaluation runs in the database: a library version scored on a labelled image set,
stored whole (the records are :mod:`whyclip.store.analysis.run_records`).

A run keeps, per image, its file, true class and unit vector, and for every way of scoring
(each aggregate of the descriptors, the class-name baseline, the random-word control) the
top classes with their scores and the rank of the true class. Audits read runs back and
need no model.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
from sqlalchemy import case, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from whyclip.store.analysis.run_records import BASELINE, FUDD, METHODS, MethodResults, RunData, RunInfo
from whyclip.store.db.library_lookup import check_library_known
from whyclip.store.db.schema import EvalImageRow, EvalResultRow, EvalRunRow, LibraryRow
from whyclip.store.errors import InputError, StoreError
from whyclip.store.names import check_name, check_text, shown


def _info(row: EvalRunRow, version: int) -> RunInfo:
    return RunInfo(
        row.id,
        row.name,
        row.library_name,
        version,
        row.library_id,
        row.created_at,
        row.dataset,
        row.encoder_key,
        row.n_images,
        json.loads(row.details or "{}"),
    )


def list_runs(engine: Engine, library: str | None = None) -> list[RunInfo]:
    """Every run (of one library name, or all), oldest first. A ``library`` the store does
    not hold is :class:`~whyclip.store.errors.LibraryNotFound` ("did you mean ...?"), not
    an empty list."""
    with Session(engine) as s:
        q = select(EvalRunRow, LibraryRow.version).join(LibraryRow, LibraryRow.id == EvalRunRow.library_id)
        if library is not None:
            q = q.where(EvalRunRow.library_name == library)
        found = [_info(r, v) for r, v in s.execute(q.order_by(EvalRunRow.id)).all()]
    if library is not None and not found:
        check_library_known(engine, library)
    return found


def run_top1(engine: Engine, runs: list[RunInfo]) -> dict[int, dict[str, Any]]:
    """Each run's top-1 accuracy, counted in the database (no run is loaded): under its
    library version's aggregate (``aggregate``, ``top1``), by the class-name baseline
    (``baseline_top1``) and by FuDD (``fudd_top1``, None when the run has no FuDD), as
    ``whyclip audit`` counts them (the true class ranked first, over every image)."""
    if not runs:
        return {}
    ids = [r.id for r in runs]
    right = func.sum(case((EvalResultRow.true_rank == 1, 1), else_=0))
    with Session(engine) as s:
        aggregates = dict(
            s.execute(
                select(EvalRunRow.id, LibraryRow.aggregate)
                .join(LibraryRow, LibraryRow.id == EvalRunRow.library_id)
                .where(EvalRunRow.id.in_(ids))
            ).all()
        )
        wanted = {*aggregates.values(), BASELINE, FUDD}
        counts = s.execute(
            select(EvalResultRow.run_id, EvalResultRow.method, func.count(), right)
            .where(EvalResultRow.run_id.in_(ids), EvalResultRow.method.in_(sorted(wanted)))
            .group_by(EvalResultRow.run_id, EvalResultRow.method)
        ).all()
    top1 = {(run_id, method): int(k) / n for run_id, method, n, k in counts if n}
    return {
        run_id: {
            "aggregate": agg,
            "top1": top1.get((run_id, agg)),
            "baseline_top1": top1.get((run_id, BASELINE)),
            "fudd_top1": top1.get((run_id, FUDD)),
        }
        for run_id, agg in aggregates.items()
    }


def unused_name(engine: Engine, library: str, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... whichever no run of ``library`` has yet."""
    taken = {r.name for r in list_runs(engine, library)}
    if stem not in taken:
        return stem
    n = 2
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"


def check_new_name(engine: Engine, library: str, name: str) -> None:
    """A name a new run of ``library`` may take: the names rule, and not yet taken."""
    check_name(name, "run name")
    if any(r.name == name for r in list_runs(engine, library)):
        raise InputError(f"library {library!r} already has a run {name!r}: choose another --name")


def find_run(engine: Engine, library: str, name: str | None = None) -> RunInfo:
    """The run ``name`` of ``library`` (default: its newest), or a one-line error."""
    check_text(library, "library name")
    if name is not None:
        check_text(name, "run name")
    runs = list_runs(engine, library)
    if not runs:
        raise InputError(
            f"library {library!r} has no evaluation runs yet: run 'whyclip eval DATASET --library {library}' first"
        )
    if name is None:
        return runs[-1]
    for r in runs:
        if r.name == name:
            return r
    names = ", ".join(shown(r.name) for r in runs[-8:])
    raise InputError(f"library {library!r} has no run {name!r} (its runs: {names}); see 'whyclip runs'")


def save_run(
    engine: Engine,
    *,
    library_id: int,
    library_name: str,
    name: str,
    dataset: str,
    encoder_key: str,
    paths: list[str],
    shas: list[str],
    labels: np.ndarray,
    vectors: np.ndarray,
    results: dict[str, MethodResults],
    details: dict[str, Any],
) -> RunInfo:
    """Write a whole run in one transaction: readers see all of it or none."""
    check_new_name(engine, library_name, name)
    unknown = set(results) - set(METHODS)
    if unknown:
        raise StoreError(f"unknown scoring methods {sorted(unknown)}")
    with Session(engine) as s, s.begin():
        row = EvalRunRow(
            library_id=library_id,
            library_name=library_name,
            name=name,
            created_at=dt.datetime.now(dt.timezone.utc),
            dataset=dataset,
            encoder_key=encoder_key,
            n_images=len(paths),
            details=json.dumps(details),
        )
        s.add(row)
        s.flush()
        s.execute(
            insert(EvalImageRow),
            [
                {
                    "run_id": row.id,
                    "position": i,
                    "path": p,
                    "sha256": h,
                    "label": int(y),
                    "vector": np.asarray(v, dtype="<f4").tobytes(),
                }
                for i, (p, h, y, v) in enumerate(zip(paths, shas, labels, vectors, strict=True))
            ],
        )
        for method, r in results.items():
            s.execute(
                insert(EvalResultRow),
                [
                    {
                        "run_id": row.id,
                        "position": i,
                        "method": method,
                        "top": json.dumps([[int(c), float(x)] for c, x in zip(r.top[i], r.top_scores[i], strict=True)]),
                        "true_score": float(r.true_score[i]),
                        "true_rank": int(r.true_rank[i]),
                    }
                    for i in range(len(paths))
                ],
            )
        run_id = row.id
        version = s.execute(select(LibraryRow.version).where(LibraryRow.id == library_id)).scalar_one()
    with Session(engine) as s:
        saved = s.get(EvalRunRow, run_id)
        assert saved is not None  # committed just above
        return _info(saved, int(version))


def load_run(engine: Engine, info: RunInfo) -> RunData:
    """A stored run's images, vectors and results."""
    with Session(engine) as s:
        images = s.execute(
            select(EvalImageRow.path, EvalImageRow.label, EvalImageRow.vector)
            .where(EvalImageRow.run_id == info.id)
            .order_by(EvalImageRow.position)
        ).all()
        rows = s.execute(
            select(EvalResultRow.method, EvalResultRow.top, EvalResultRow.true_score, EvalResultRow.true_rank)
            .where(EvalResultRow.run_id == info.id)
            .order_by(EvalResultRow.method, EvalResultRow.position)
        ).all()
    n = len(images)
    vectors = (
        np.stack([np.frombuffer(v, dtype="<f4") for _, _, v in images]).astype(np.float32)
        if n
        else np.zeros((0, 0), np.float32)
    )
    grouped: dict[str, list[tuple[Any, float, int]]] = {}
    for method, top, true_score, true_rank in rows:
        grouped.setdefault(method, []).append((json.loads(top), true_score, true_rank))
    results = {}
    for method, items in grouped.items():
        k = min(len(t) for t, _, _ in items)
        results[method] = MethodResults(
            np.array([[c for c, _ in t[:k]] for t, _, _ in items], dtype=np.int64).reshape(n, k),
            np.array([[x for _, x in t[:k]] for t, _, _ in items], dtype=np.float64).reshape(n, k),
            np.array([x for _, x, _ in items], dtype=np.float64),
            np.array([r for _, _, r in items], dtype=np.int64),
        )
    return RunData(
        info, [p for p, _, _ in images], np.array([y for _, y, _ in images], dtype=np.int64), vectors, results
    )
