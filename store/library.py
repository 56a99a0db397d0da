"""The store: named, versioned descriptor libraries in SQL + FAISS, and exact explanations.

``Store.write_library`` publishes a version atomically (readers only see ``ready`` rows);
``Store.load`` returns a :class:`Library`, which explains image vectors exactly.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from . import schema
from .errors import EncoderMismatch, InputError, LibraryNotFound, StoreError
from .explain import (
    BaselineScore,
    ClassScore,
    Contrast,
    ContrastRow,
    DescriptorScore,
    Explanation,
    Retrieved,
)
from .home import resolve_db_url, resolve_home
from .index import (
    IndexFiles,
    build_index,
    choose_factory,
    index_ids,
    measure_recall,
    read_index_files,
    search,
    write_index_files,
)
from .schema import ClassRow, DescriptorRow, LibraryRow, Meta, SharedTextRow
from .scoring import AGGREGATES, build_class_matrices, descriptor_weights, score_classes, softmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderInfo:
    """What a library records about the encoder that embedded it."""

    id: str  # identity compared at query time (name + weights fingerprint)
    name: str  # what to pass to --model to load it again
    dim: int
    logit_scale: float


@dataclass(frozen=True)
class LibraryInfo:
    id: int
    name: str
    version: int
    created_at: dt.datetime
    encoder_id: str
    encoder_name: str
    dim: int
    logit_scale: float
    template: str
    baseline_template: str
    aggregate: str
    n_classes: int
    n_descriptors: int
    n_prompts: int
    n_empty_classes: int
    source: str
    source_sha256: str
    index_key: str
    index_factory: str
    recall_at_10: float


@dataclass
class DraftClass:
    """One class of a library about to be written; prompts are already built."""

    name: str
    baseline_prompt: str
    descriptors: list[str]
    prompts: list[str]
    truncated: list[bool]


@dataclass
class LibraryDraft:
    """A complete library version: classes in label order and one vector per distinct prompt."""

    name: str
    encoder: EncoderInfo
    template: str
    baseline_template: str
    classes: list[DraftClass]
    prompt_rows: dict[str, int]  # prompt text -> row of vectors / norms
    vectors: np.ndarray  # (P, d) unit vectors
    norms: np.ndarray  # (P,) raw norms before normalisation
    source: str = ""
    source_sha256: str = ""
    aggregate: str = "mean"
    index_factory: str | None = None  # FAISS factory for retrieval; None: Flat, or HNSW32 when large


def _info(row: LibraryRow, n_empty: int) -> LibraryInfo:
    return LibraryInfo(
        id=row.id, name=row.name, version=row.version, created_at=row.created_at,
        encoder_id=row.encoder_id, encoder_name=row.encoder_name, dim=row.dim,
        logit_scale=row.logit_scale, template=row.template, baseline_template=row.baseline_template,
        aggregate=row.aggregate, n_classes=row.n_classes, n_descriptors=row.n_descriptors,
        n_prompts=row.n_prompts, n_empty_classes=n_empty, source=row.source,
        source_sha256=row.source_sha256, index_key=row.index_key, index_factory=row.index_factory,
        recall_at_10=row.recall_at_10,
    )  # fmt: skip


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _shared_texts(classes: list[DraftClass]) -> dict[str, list[str]]:
    """Descriptor text -> the classes that have it, in label order."""
    out: dict[str, list[str]] = {}
    for c in classes:
        for text in dict.fromkeys(c.descriptors):
            out.setdefault(text, []).append(c.name)
    return out


class Store:
    """Libraries in a database (SQLite in ``home`` by default) plus index files in ``home``."""

    def __init__(self, engine: Engine, home: Path, store_id: str):
        self.engine = engine
        self.home = home
        self.store_id = store_id

    @classmethod
    def open(cls, home: str | Path | None = None, db_url: str | None = None, *, create: bool = True) -> Store:
        """Open (and with ``create``, initialise) the store. Read-only callers pass
        ``create=False`` so that a typo'd home never leaves an empty database behind."""
        home_path = resolve_home(home)
        url = resolve_db_url(home_path, db_url)
        is_sqlite = url.startswith("sqlite")
        if is_sqlite and not create:
            db_file = url.split("///", 1)[-1]
            if not Path(db_file).is_file():
                raise StoreError(
                    f"no whyclip data at {home_path} yet: run 'whyclip ingest FILE --library NAME' "
                    "first, or point --home / WHYCLIP_HOME at your data directory"
                )
        if create:
            home_path.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_engine(url)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(f"cannot use database URL {url!r}: {exc}") from None
        if is_sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with engine.begin() as conn:
                if create or schema.schema_version(conn) < len(schema.MIGRATIONS):
                    schema.migrate(conn)
                store_id = conn.execute(select(Meta.value).where(Meta.key == "store_id")).scalar_one()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the whyclip database at {url}: {exc}") from None
        return cls(engine, home_path, store_id)

    # -- reading -------------------------------------------------------------------------

    def libraries(self) -> list[LibraryInfo]:
        """The newest ready version of every library, by name."""
        with Session(self.engine) as s:
            newest = (
                select(LibraryRow.name, func.max(LibraryRow.version).label("v"))
                .where(LibraryRow.status == schema.READY)
                .group_by(LibraryRow.name)
                .subquery()
            )
            rows = s.scalars(
                select(LibraryRow)
                .join(newest, (LibraryRow.name == newest.c.name) & (LibraryRow.version == newest.c.v))
                .order_by(LibraryRow.name)
            ).all()
            return [_info(r, self._n_empty(s, r.id)) for r in rows]

    def library(self, name: str, version: int | None = None) -> LibraryInfo:
        with Session(self.engine) as s:
            q = select(LibraryRow).where(LibraryRow.name == name, LibraryRow.status == schema.READY)
            if version is not None:
                q = q.where(LibraryRow.version == version)
            row = s.scalars(q.order_by(LibraryRow.version.desc()).limit(1)).first()
            if row is None:
                names = [i.name for i in self.libraries()]
                hint = f"known libraries: {', '.join(names)}" if names else "the store has no libraries yet"
                what = f"library {name!r}" + (f" version {version}" if version is not None else "")
                raise LibraryNotFound(f"no {what}; {hint} (add one with 'whyclip ingest FILE --library NAME')")
            return _info(row, self._n_empty(s, row.id))

    @staticmethod
    def _n_empty(s: Session, library_id: int) -> int:
        q = select(func.count()).where(ClassRow.library_id == library_id, ClassRow.n_descriptors == 0)
        return int(s.scalar(q) or 0)

    def index_folder(self, info: LibraryInfo) -> Path:
        return self.home / "indexes" / self.store_id / info.index_key

    def load(self, name: str, version: int | None = None, *, encoder_id: str | None = None) -> Library:
        """Load a library for querying; with ``encoder_id``, refuse a different encoder."""
        info = self.library(name, version)
        lib = Library(self, info)
        if encoder_id is not None:
            lib.check_encoder(encoder_id)
        return lib

    # -- writing -------------------------------------------------------------------------

    def write_library(self, draft: LibraryDraft) -> LibraryInfo:
        """Publish ``draft`` as the next version of its name, all or nothing."""
        d = draft.encoder.dim
        if draft.vectors.ndim != 2 or draft.vectors.shape[1] != d:
            raise StoreError(f"vectors have shape {draft.vectors.shape}, expected (*, {d})")
        if draft.aggregate not in AGGREGATES:
            raise InputError(f"unknown aggregate {draft.aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        rows_of = draft.prompt_rows
        desc_rows = np.array([rows_of[p] for c in draft.classes for p in c.prompts], dtype=np.int64)
        base_rows = np.array([rows_of[c.baseline_prompt] for c in draft.classes], dtype=np.int64)
        counts = np.array([len(c.prompts) for c in draft.classes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        vectors = np.ascontiguousarray(draft.vectors[desc_rows], dtype=np.float32).reshape(-1, d)
        norms = draft.norms[desc_rows].astype(np.float32)
        matrices = build_class_matrices(vectors, norms, offsets, draft.vectors[base_rows].reshape(-1, d))
        factory = choose_factory(int(offsets[-1]), draft.index_factory)
        key = uuid.uuid4().hex
        folder = self.home / "indexes" / self.store_id / key
        try:
            with Session(self.engine) as s, s.begin():
                version = (s.scalar(select(func.max(LibraryRow.version)).where(LibraryRow.name == draft.name)) or 0) + 1
                row = LibraryRow(
                    name=draft.name, version=version, status=schema.BUILDING,
                    created_at=dt.datetime.now(dt.timezone.utc), encoder_id=draft.encoder.id,
                    encoder_name=draft.encoder.name, dim=d, logit_scale=float(draft.encoder.logit_scale),
                    template=draft.template, baseline_template=draft.baseline_template,
                    aggregate=draft.aggregate, n_classes=len(draft.classes), n_descriptors=int(offsets[-1]),
                    n_prompts=len(rows_of), source=draft.source, source_sha256=draft.source_sha256,
                    index_key=key, index_factory=factory,
                )  # fmt: skip
                s.add(row)
                s.flush()
                class_ids = s.scalars(
                    insert(ClassRow).returning(ClassRow.id, sort_by_parameter_order=True),
                    [
                        {"library_id": row.id, "position": i, "name": c.name,
                         "baseline_prompt": c.baseline_prompt, "n_descriptors": len(c.prompts)}
                        for i, c in enumerate(draft.classes)
                    ],
                ).all()  # fmt: skip
                params = [
                    {"library_id": row.id, "class_id": cid, "position": j, "text": text, "prompt": prompt,
                     "truncated": bool(trunc)}
                    for cid, c in zip(class_ids, draft.classes)
                    for j, (text, prompt, trunc) in enumerate(zip(c.descriptors, c.prompts, c.truncated))
                ]  # fmt: skip
                shared = _shared_texts(draft.classes)
                for param, norm in zip(params, norms.tolist()):
                    param["norm"] = norm
                    param["shared"] = len(shared[param["text"]])
                multi = [{"library_id": row.id, "text": t, "classes": len(names), "examples": ", ".join(names[:8])}
                         for t, names in shared.items() if len(names) > 1]  # fmt: skip
                if multi:
                    s.execute(insert(SharedTextRow), multi)
                ids = (
                    s.scalars(insert(DescriptorRow).returning(DescriptorRow.id, sort_by_parameter_order=True), params).all()
                    if params
                    else []
                )
                index = build_index(vectors, np.asarray(ids, dtype=np.int64), factory)
                row.recall_at_10 = measure_recall(index, vectors, matrices)
                manifest = {"store_id": self.store_id, "library_id": row.id, "name": draft.name,
                            "version": version, "n_descriptors": int(offsets[-1]), "dim": d,
                            "encoder_id": draft.encoder.id}  # fmt: skip
                write_index_files(folder, index, vectors, matrices, norms, manifest)
                row.status = schema.READY
                library_id = row.id
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("wrote library %s v%d (%d classes, %d descriptors)", draft.name, version, len(draft.classes), offsets[-1])
        with Session(self.engine) as s:
            return _info(s.get(LibraryRow, library_id), int((counts == 0).sum()))


class Library:
    """A loaded library version: exact scoring and explanations for image vectors."""

    def __init__(self, store: Store, info: LibraryInfo):
        self.store = store
        self.info = info
        expected = {"store_id": store.store_id, "library_id": info.id, "n_descriptors": info.n_descriptors}
        self.files: IndexFiles = read_index_files(store.index_folder(info), expected)
        self.vectors = self.files.vectors
        self.ids = index_ids(self.files.index)
        if len(self.ids) > 1 and not np.all(np.diff(self.ids) > 0):
            raise StoreError(f"index of library {info.name!r} is not in descriptor order: re-ingest it")
        with Session(store.engine) as s:
            rows = s.execute(
                select(ClassRow.id, ClassRow.name, ClassRow.baseline_prompt)
                .where(ClassRow.library_id == info.id)
                .order_by(ClassRow.position)
            ).all()
        self.class_ids = [r[0] for r in rows]
        self.class_names = [r[1] for r in rows]
        self.baseline_prompts = [r[2] for r in rows]
        self._position = {n: i for i, n in enumerate(self.class_names)}

    @property
    def matrices(self):
        return self.files.matrices

    def check_encoder(self, encoder_id: str) -> None:
        if encoder_id != self.info.encoder_id:
            raise EncoderMismatch(
                f"library {self.info.name!r} was built with encoder {self.info.encoder_id!r}, "
                f"not {encoder_id!r}: query it with --model {self.info.encoder_name!r}, "
                "or re-ingest it with this model"
            )

    def class_position(self, name: str) -> int:
        if name in self._position:
            return self._position[name]
        close = difflib.get_close_matches(name, self.class_names, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise InputError(f"library {self.info.name!r} has no class {name!r}{hint}")

    def scores(self, images: np.ndarray, aggregate: str | None = None) -> np.ndarray:
        """Exact scores of every class, shape (B, C)."""
        agg = aggregate or self.info.aggregate
        return score_classes(images, self.matrices, agg, self.vectors)

    @lru_cache(maxsize=4096)  # noqa: B019 - a Library lives as long as its cache should
    def _class_texts(self, position: int) -> tuple[tuple[str, str], ...]:
        with Session(self.store.engine) as s:
            rows = s.execute(
                select(DescriptorRow.text, DescriptorRow.prompt)
                .where(DescriptorRow.class_id == self.class_ids[position])
                .order_by(DescriptorRow.position)
            ).all()
        return tuple((r[0], r[1]) for r in rows)

    def _evidence(self, image: np.ndarray, position: int, aggregate: str) -> list[DescriptorScore]:
        """Every descriptor of a class with its similarity and weight, best first."""
        lo, hi = self.matrices.offsets[position], self.matrices.offsets[position + 1]
        scale = self.info.logit_scale
        if hi == lo:
            s = float(self.matrices.baseline[position] @ image)
            return [DescriptorScore("", self.baseline_prompts[position], s, s * scale, 1.0, fallback=True)]
        unit = self.vectors[lo:hi]
        sims = unit @ image
        weights = descriptor_weights(aggregate, sims, unit, self.files.norms[lo:hi])
        texts = self._class_texts(position)
        out = [
            DescriptorScore(t, p, float(sim), float(sim) * scale, float(w))
            for (t, p), sim, w in zip(texts, sims, weights)
        ]
        return sorted(out, key=lambda d: -d.similarity)

    def contrast(self, image: np.ndarray, a: int, b: int, aggregate: str, scores: np.ndarray) -> Contrast:
        """Split ``score(a) - score(b)`` into per-descriptor contributions that add up exactly.

        With ``score = sum w_d s_d`` and ``mu`` the mean of the two scores, a descriptor of
        class a contributes ``w_d (s_d - mu / W_a)`` (``W_a = sum w``), one of b the negative
        of the same; a descriptor text both classes have gets one row with both parts.
        """
        mu = (float(scores[a]) + float(scores[b])) / 2
        rows: dict[str, dict] = {}
        for side, pos, sign in (("a", a, 1.0), ("b", b, -1.0)):
            ev = self._evidence(image, pos, aggregate)
            total = sum(d.weight for d in ev) or 1.0
            for d in ev:
                key = d.descriptor if not d.fallback else d.prompt
                row = rows.setdefault(key, {"a": None, "b": None, "contribution": 0.0})
                row[side] = d.similarity
                row["contribution"] += sign * d.weight * (d.similarity - mu / total)
        na, nb = self.class_names[a], self.class_names[b]
        out = [
            ContrastRow(text, r["a"], r["b"], r["contribution"],
                        na if r["contribution"] > 1e-12 else nb if r["contribution"] < -1e-12 else "-")
            for text, r in rows.items()
        ]  # fmt: skip
        out.sort(key=lambda r: -r.contribution)
        return Contrast(na, nb, float(scores[a]), float(scores[b]), out)

    def retrieve(self, images: np.ndarray, k: int = 10) -> list[list[Retrieved]]:
        """The ``k`` best-matching descriptors in the whole library, per image (FAISS)."""
        k = min(k, self.files.index.ntotal)
        if k <= 0:
            return [[] for _ in range(len(images))]
        sims, ids = search(self.files.index, np.ascontiguousarray(images, dtype=np.float32), k)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        with Session(self.store.engine) as s:
            meta = {
                r[0]: r[1:]
                for r in s.execute(
                    select(DescriptorRow.id, ClassRow.name, DescriptorRow.text, DescriptorRow.prompt)
                    .join(ClassRow, ClassRow.id == DescriptorRow.class_id)
                    .where(DescriptorRow.id.in_(wanted))
                )
            }
        return [
            [Retrieved(meta[int(i)][0], meta[int(i)][1], meta[int(i)][2], float(sim), int(i))
             for sim, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(sims, ids)
        ]  # fmt: skip

    def explain(
        self,
        images: np.ndarray,
        names: list[str] | None = None,
        *,
        aggregate: str | None = None,
        top: int = 5,
        compare: tuple[str, str] | None = None,
        retrieve: int = 10,
    ) -> list[Explanation]:
        """Explain each unit image vector (rows of ``images``): exact scores for every class,
        the evidence of the ``top`` classes, a contrast, the baseline and library-wide hits."""
        agg = aggregate or self.info.aggregate
        if agg not in AGGREGATES:
            raise InputError(f"unknown aggregate {agg!r}: choose one of {', '.join(AGGREGATES)}")
        images = np.atleast_2d(np.asarray(images, dtype=np.float32))
        if images.shape[1] != self.info.dim:
            raise EncoderMismatch(f"image vectors have dimension {images.shape[1]}, library {self.info.name!r} has {self.info.dim}")
        pair = (self.class_position(compare[0]), self.class_position(compare[1])) if compare else None
        names = names or [f"image {i}" for i in range(len(images))]
        scale = self.info.logit_scale
        scores = self.scores(images, agg)
        base_scores = images @ self.matrices.baseline.T
        hits = self.retrieve(images, retrieve)
        top = max(1, min(top, len(self.class_names)))
        out = []
        for i, image in enumerate(images):
            probs = softmax(scores[i], scale)
            bprobs = softmax(base_scores[i], scale)
            ranking = np.argsort(-scores[i], kind="stable")
            order = ranking[:top]
            classes = [
                ClassScore(self.class_names[c], float(scores[i, c]), float(probs[c]), rank + 1,
                           self._evidence(image, int(c), agg), float(base_scores[i, c]), float(bprobs[c]))
                for rank, c in enumerate(order)
            ]  # fmt: skip
            border = np.argsort(-base_scores[i], kind="stable")[:top]
            baseline = [BaselineScore(self.class_names[c], float(base_scores[i, c]), float(bprobs[c])) for c in border]
            a, b = pair if pair else (int(ranking[0]), int(ranking[1]) if len(ranking) > 1 else None)
            contrast = self.contrast(image, a, b, agg, scores[i]) if b is not None else None
            out.append(
                Explanation(names[i], self.info.name, self.info.version, self.info.encoder_name, agg, scale,
                            len(self.class_names), classes, baseline, contrast, hits[i])
            )  # fmt: skip
        return out
