"""The store: named, versioned descriptor libraries in SQL + FAISS.

``Store.write_library`` publishes a version atomically (readers only see ``ready`` rows);
``Store.load`` returns a :class:`~whyclip.store.library.Library`, which explains image vectors exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from whyclip.store.db import migrations, schema
from whyclip.store.db.engine import begin_write, make_engine
from whyclip.store.db.library_lookup import library_not_found
from whyclip.store.db.pair_descriptors import count_pairs
from whyclip.store.db.schema import ClassRow, DescriptorRow, EvalImageRow, EvalRunRow, LibraryRow, Meta, SharedTextRow
from whyclip.store.db.writes import write_session
from whyclip.store.errors import AlreadyPublished, InputError, LibraryDeleted, LibraryNotFound, NoStore, StoreError
from whyclip.store.home import resolve_db_url, resolve_home
from whyclip.store.library import Library
from whyclip.store.method import AGGREGATES, ClassMatrices
from whyclip.store.method.prompts import rule_name
from whyclip.store.names import check_name, check_text, shown
from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft, LibraryInfo
from whyclip.store.vectors.factory_bounds import check_factory_size
from whyclip.store.vectors.files import (
    build_retrieval,
    choose_factory,
    read_index_files,
    retune_recall,
    start_index_files,
    write_index_files,
    write_vector_files,
)
from whyclip.store.vectors.recall_tuning import MIN_EVAL_IMAGES, Queries, eval_queries, proxy_queries

__all__ = ["DraftClass", "EncoderInfo", "LibraryDraft", "LibraryInfo", "Store"]

log = logging.getLogger(__name__)
INSERT_BATCH = 20_000  # rows a statement: the rows of a version are inserted in bounded batches
MAX_VERSION = 2**31 - 1  # library versions are 32-bit integers in every database whyclip supports


def _info(row: LibraryRow, n_empty: int, n_pairs: int = 0) -> LibraryInfo:
    return LibraryInfo(
        id=row.id,
        name=row.name,
        version=row.version,
        created_at=row.created_at,
        encoder_id=row.encoder_id,
        encoder_name=row.encoder_name,
        dim=row.dim,
        logit_scale=row.logit_scale,
        template=row.template,
        baseline_template=row.baseline_template,
        aggregate=row.aggregate,
        n_classes=row.n_classes,
        n_descriptors=row.n_descriptors,
        n_prompts=row.n_prompts,
        n_empty_classes=n_empty,
        source=row.source,
        source_sha256=row.source_sha256,
        index_key=row.index_key,
        index_factory=row.index_factory,
        recall_at_10=row.recall_at_10,
        index_params=json.loads(row.index_params or "{}"),
        first_descriptor_id=row.first_descriptor_id,
        prompt_rule=row.prompt_rule or "",
        n_pairs=n_pairs,
        note=row.note or "",
    )


SHARED_EXAMPLES = 8  # classes named in a shared text's row


def _shared_texts(classes: list[DraftClass]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Descriptor text -> how many classes have it; and, for the texts several classes
    share, the first :data:`SHARED_EXAMPLES` of them in label order (in order of first
    appearance). Counts, not lists of names: one int a distinct text at ten million."""
    counts: dict[str, int] = {}
    for c in classes:
        for text in dict.fromkeys(c.descriptors):
            counts[text] = counts.get(text, 0) + 1
    examples: dict[str, list[str]] = {}
    for c in classes:
        for text in dict.fromkeys(c.descriptors):
            if counts[text] > 1:
                names = examples.setdefault(text, [])
                if len(names) < SHARED_EXAMPLES:
                    names.append(c.name)
    return counts, examples


def _descriptor_params(
    classes: list[DraftClass], class_ids: list[int], library_id: int, first: int, shared: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """The descriptor rows of a version, one at a time (keys ``first``, ``first + 1``, ...
    in label order), so that they are inserted in batches without a list of them all."""
    key = first
    for cid, c in zip(class_ids, classes, strict=True):
        for j, (text, prompt, trunc) in enumerate(zip(c.descriptors, c.prompts, c.truncated, strict=True)):
            yield {
                "library_id": library_id,
                "class_id": cid,
                "position": j,
                "text": text,
                "truncated": bool(trunc),
                "prompt": prompt,
                "shared": shared[text],
                "id": key,
            }
            key += 1


SQLITE_NEEDED = (3, 35)  # RETURNING (writes) and DROP COLUMN (migrations)


def _check_sqlite(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    dbapi = engine.dialect.dbapi
    assert dbapi is not None  # a created engine has its driver module
    have = dbapi.sqlite_version_info
    if tuple(have[:2]) < SQLITE_NEEDED:
        raise StoreError(
            f"whyclip needs SQLite {'.'.join(map(str, SQLITE_NEEDED))} or newer, and this Python has "
            f"{'.'.join(map(str, have))}: use a Python built with a newer SQLite, or a PostgreSQL --db"
        )


def _newer(where: str, exc: migrations.NewerStore) -> StoreError:
    return StoreError(
        f"the whyclip database at {where} was written by a newer whyclip (revision {exc.revision}): upgrade whyclip"
    )


def _store_id(conn: Connection) -> str:
    return conn.execute(select(Meta.value).where(Meta.key == "store_id")).scalar_one()


def migrate_store(engine: Engine, where: str) -> tuple[str, migrations.State]:
    """Bring the schema up to date, all or nothing, and return the store id and the state
    before. Migrators queue on the write lock (``BEGIN IMMEDIATE``, a PostgreSQL advisory
    lock): a process that opens a database another is creating or migrating waits, then
    finds it current and applies nothing."""
    try:
        with begin_write(engine) as conn:
            before = migrations.upgrade(conn)
            return _store_id(conn), before
    except migrations.NewerStore as exc:
        raise _newer(where, exc) from None
    except StoreError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"migrating the whyclip database at {where} failed and changed nothing: {reason}") from None


def schema_state(engine: Engine, where: str) -> migrations.State:
    """Where the database's schema stands and what migrating would apply; writes nothing."""
    with engine.connect() as conn:
        try:
            return migrations.state(conn)
        except migrations.NewerStore as exc:
            raise _newer(where, exc) from None


def _check_current(engine: Engine, where: str, home: Path) -> str:
    """A read command's open: the store id of an up-to-date database; otherwise one line
    saying what to run. Writes nothing."""
    st = schema_state(engine, where)
    with engine.connect() as conn:
        if st.current is None:
            raise NoStore(f"no whyclip data at {home} yet: run 'whyclip ingest FILE --library NAME' first")
        if not st.up_to_date:
            raise StoreError(
                f"the whyclip database at {where} was written by an older whyclip (revision {st.current}, this one "
                f"uses {st.head}): run 'whyclip migrate' (a backup is not needed: it is all or nothing)"
            )
        return _store_id(conn)


def _locate(home: str | Path | None, db_url: str | None, create: bool) -> tuple[Path, str]:
    """The home folder and database URL; without ``create``, a missing SQLite file is refused."""
    home_path = resolve_home(home)
    url = resolve_db_url(home_path, db_url)
    if url.startswith("sqlite") and not create and not Path(url.split("///", 1)[-1]).is_file():
        raise NoStore(
            f"no whyclip data at {home_path} yet: run 'whyclip ingest FILE --library NAME' "
            "first, or point --home / WHYCLIP_HOME at your data directory"
        )
    if create:
        home_path.mkdir(parents=True, exist_ok=True)
    return home_path, url


def read_schema_state(home: str | Path | None = None, db_url: str | None = None) -> migrations.State:
    """Where an existing store's schema stands and what migrating it would apply; writes nothing."""
    _, url = _locate(home, db_url, create=False)
    engine = make_engine(url)
    try:
        _check_sqlite(engine)
        return schema_state(engine, engine.url.render_as_string(hide_password=True))
    finally:
        engine.dispose()


class Store:
    """Libraries in a database (SQLite in ``home`` by default) plus index files in ``home``."""

    def __init__(self, engine: Engine, home: Path, store_id: str, migration: migrations.State | None = None):
        self.engine = engine
        self.home = home
        self.store_id = store_id
        self.migration = migration  # where the schema stood before this open migrated it (write opens)

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        db_url: str | None = None,
        *,
        create: bool = True,
        migrate: bool | None = None,
    ) -> Store:
        """Open the store. Write commands pass ``create`` (the default): the database is
        created or migrated as needed. Read commands pass ``create=False``: a missing or
        out-of-date store is refused in one line, so a typo'd home leaves nothing behind and
        reading never migrates. ``migrate=True`` with ``create=False`` migrates an existing
        store without creating one (``whyclip migrate``, ``whyclip eval``)."""
        migrate = create if migrate is None else migrate
        home_path, url = _locate(home, db_url, create)
        engine = make_engine(url)
        where = engine.url.render_as_string(hide_password=True)
        try:
            _check_sqlite(engine)
            before = None
            if migrate:
                store_id, before = migrate_store(engine, where)
            else:
                store_id = _check_current(engine, where, home_path)
            with engine.connect() as conn:
                missing = schema.missing_columns(conn)
            if missing:
                raise StoreError(
                    f"the whyclip database at {where} lacks {', '.join(missing[:3])}"
                    f"{' and more' if len(missing) > 3 else ''}: it was written by an incompatible development "
                    "version; move it aside and re-ingest your libraries"
                )
        except StoreError:
            engine.dispose()
            raise
        except Exception as exc:
            engine.dispose()
            raise StoreError(f"cannot open the whyclip database at {where}: {exc}") from None
        return cls(engine, home_path, store_id, before)

    # -- reading -------------------------------------------------------------------------

    def libraries(self, every_version: bool = False) -> list[LibraryInfo]:
        """The newest ready version of every library, by name; with ``every_version``,
        every ready version (by name, then version)."""
        with Session(self.engine) as s:
            q = select(LibraryRow).where(LibraryRow.status == schema.READY)
            if not every_version:
                newest = (
                    select(LibraryRow.name, func.max(LibraryRow.version).label("v"))
                    .where(LibraryRow.status == schema.READY)
                    .group_by(LibraryRow.name)
                    .subquery()
                )
                q = q.join(newest, (LibraryRow.name == newest.c.name) & (LibraryRow.version == newest.c.v))
            rows = s.scalars(q.order_by(LibraryRow.name, LibraryRow.version)).all()
            return [_info(r, self._n_empty(s, r.id), count_pairs(s, r.id)) for r in rows]

    def library(self, name: str, version: int | None = None) -> LibraryInfo:
        check_text(name, "library name")
        if version is not None and not 1 <= version <= MAX_VERSION:  # the database could not even compare it
            raise LibraryNotFound(
                f"no library '{shown(name)}' version {version}: versions are numbered 1, 2, ... "
                "(see 'whyclip libraries --all')"
            )
        with Session(self.engine) as s:
            q = select(LibraryRow).where(LibraryRow.name == name, LibraryRow.status == schema.READY)
            if version is not None:
                q = q.where(LibraryRow.version == version)
            row = s.scalars(q.order_by(LibraryRow.version.desc()).limit(1)).first()
            if row is None:
                raise self._not_found(s, name, version)
            return _info(row, self._n_empty(s, row.id), count_pairs(s, row.id))

    def versions(self, name: str) -> list[LibraryInfo]:
        """Every ready version of ``name``, newest first: the rows of that one name, whatever
        the number of libraries (an unknown name: :class:`LibraryNotFound`)."""
        check_text(name, "library name")
        with Session(self.engine) as s:
            q = select(LibraryRow).where(LibraryRow.name == name, LibraryRow.status == schema.READY)
            rows = s.scalars(q.order_by(LibraryRow.version.desc())).all()
            if not rows:
                raise self._not_found(s, name, None)
            return [_info(r, self._n_empty(s, r.id), count_pairs(s, r.id)) for r in rows]

    @staticmethod
    def _not_found(s: Session, name: str, version: int | None) -> LibraryNotFound:
        """The error for an unknown name or version (:func:`library_not_found`)."""
        return library_not_found(s, name, version)

    @staticmethod
    def _n_empty(s: Session, library_id: int) -> int:
        q = select(func.count()).where(ClassRow.library_id == library_id, ClassRow.n_descriptors == 0)
        return int(s.scalar(q) or 0)

    def deletions(self, name: str) -> int:
        """The deletion count of ``name``, for :attr:`LibraryDraft.deletions_seen`: read it
        when an ingest is accepted, and the version it publishes never resurrects a library
        deleted in between."""
        with Session(self.engine) as s:
            return deletion_count(s, name)

    def index_folder(self, info: LibraryInfo) -> Path:
        return self.home / "indexes" / self.store_id / info.index_key

    def load(self, name: str, version: int | None = None, *, encoder_id: str | None = None) -> Library:
        """Load a library for querying; with ``encoder_id``, refuse a different encoder."""
        info = self.library(name, version)
        expected = {
            "store_id": self.store_id,
            "library_id": info.id,
            "index_key": info.index_key,
            "n_descriptors": info.n_descriptors,
        }
        lib = Library(self.engine, info, read_index_files(self.index_folder(info), expected, info.index_params or None))
        if encoder_id is not None:
            lib.check_encoder(encoder_id)
        return lib

    # -- writing -------------------------------------------------------------------------

    def write_library(self, draft: LibraryDraft) -> LibraryInfo:
        """Publish ``draft`` as the next version of its name, all or nothing, in two phases:
        first the index files (minutes at a million descriptors, no database lock held),
        then every row in one short transaction that makes the version ready. A failure in
        either leaves no version visible and no files behind.

        Nothing scales with the library in memory beyond what it needs (the norms, the
        offsets, the retrieval index's codes): the vectors are streamed from
        ``draft.vectors`` (any (P, d) array, a read-only ``np.memmap`` included) into the
        version's vector file in chunks, the index is built from that file memory-mapped,
        and the rows go in bounded batches."""
        check_name(draft.name)
        d = draft.encoder.dim
        if draft.vectors.ndim != 2 or draft.vectors.shape[1] != d:
            raise StoreError(f"vectors have shape {draft.vectors.shape}, expected (*, {d})")
        if draft.aggregate not in AGGREGATES:
            raise InputError(f"unknown aggregate {draft.aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        rows_of = draft.prompt_rows
        counts = np.fromiter((len(c.prompts) for c in draft.classes), dtype=np.int64, count=len(draft.classes))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_descriptors = int(offsets[-1])
        desc_rows = np.fromiter(
            (rows_of[p] for c in draft.classes for p in c.prompts), dtype=np.int64, count=n_descriptors
        )
        base_rows = np.fromiter(
            (rows_of[c.baseline_prompt] for c in draft.classes), dtype=np.int64, count=len(draft.classes)
        )
        norms = np.asarray(draft.norms[desc_rows], dtype=np.float32)
        factory = choose_factory(n_descriptors, draft.index_factory, d)
        if factory not in ("Flat", "ClassIVF"):  # before anything is allocated
            check_factory_size(factory, n_descriptors, d)
        key = uuid.uuid4().hex
        folder = self.home / "indexes" / self.store_id / key
        tmp = start_index_files(folder)
        try:
            vectors, baseline = write_vector_files(tmp, draft.vectors, desc_rows, base_rows, norms, offsets)
            log.debug("write_library stage: vector files")
            # the class means are derived (in chunks of classes) only for the class inverted file
            matrices = ClassMatrices(None, None, baseline, offsets, vectors=vectors, norms=norms)
            queries = None if factory == "Flat" else self.tuning_queries(draft.name, draft.encoder.id, d)
            if queries is None and factory != "Flat":
                queries = proxy_queries(vectors, offsets)
            built = build_retrieval(vectors, matrices, factory, queries)
            log.debug("write_library stage: retrieval index")
            recall_at_10 = built.recall_at_10
            manifest = {
                "store_id": self.store_id,
                "index_key": key,
                "name": draft.name,
                "n_descriptors": n_descriptors,
                "dim": d,
                "encoder_id": draft.encoder.id,
                "index_factory": built.factory,
                "index_params": built.params,
            }
            write_index_files(tmp, folder, built, manifest)
            log.debug("write_library stage: index files")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            del vectors, baseline, matrices, built  # free the index's codes before the rows
            library_id, version = self._insert_rows(draft, key, factory_row(manifest), recall_at_10)
            log.debug("write_library stage: rows")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._checkpoint()
        log.info(
            "wrote library %s v%d (%d classes, %d descriptors)", draft.name, version, len(draft.classes), n_descriptors
        )
        with Session(self.engine) as s:
            row = s.get(LibraryRow, library_id)
            assert row is not None  # committed just above
            return _info(row, int((counts == 0).sum()))

    def tuning_queries(self, name: str, encoder_id: str, dim: int, limit: int = 2000) -> Queries | None:
        """The image vectors stored by eval runs of any version of library ``name`` built
        with ``encoder_id`` (the newest ``limit`` distinct images), or None when fewer than
        the tuning needs."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(EvalImageRow.sha256, EvalImageRow.vector)
                .join(EvalRunRow, EvalRunRow.id == EvalImageRow.run_id)
                .join(LibraryRow, LibraryRow.id == EvalRunRow.library_id)
                .where(LibraryRow.name == name, LibraryRow.encoder_id == encoder_id, LibraryRow.dim == dim)
                .order_by(EvalImageRow.run_id.desc(), EvalImageRow.position)
            ).all()
        seen: dict[str, bytes] = {}
        for sha, vector in rows:
            if len(seen) >= limit:
                break
            seen.setdefault(sha, vector)
        if len(seen) < MIN_EVAL_IMAGES:
            return None
        return eval_queries(np.stack([np.frombuffer(v, dtype="<f4") for v in seen.values()]))

    def retune_recall(self, name: str, version: int | None = None) -> LibraryInfo:
        """Re-tune a version's approximate retrieval on its library's eval images (run
        after ``whyclip eval``); the version is unchanged when it answers exactly by build or
        there are too few images. Only the stored parameters and recall change."""
        info = self.library(name, version)
        if info.index_factory == "Flat":
            return info
        queries = self.tuning_queries(info.name, info.encoder_id, info.dim)
        if queries is None:
            return info
        lib = self.load(info.name, info.version)
        params = retune_recall(lib.files, info.index_factory, queries)
        if params is None:
            return info
        exact = "exact_fallback" in params
        with write_session(self.engine, f"re-tune library {name!r}") as s:
            row = s.get(LibraryRow, info.id)
            if row is None:
                raise LibraryNotFound(f"library {name!r} version {info.version} was deleted while being re-tuned")
            row.index_params = json.dumps(params)
            row.recall_at_10 = 1.0 if exact else float(params.get("recall_at_10", row.recall_at_10))
        log.info(
            "re-tuned %s v%d on %s: %s",
            name,
            info.version,
            queries.label,
            "exact scan" if exact else f"recall@10 {params.get('recall_at_10'):.3f}",
        )
        return self.library(info.name, info.version)

    def _insert_rows(
        self, draft: LibraryDraft, key: str, index: dict[str, Any], recall_at_10: float
    ) -> tuple[int, int]:
        """Phase two: the version's rows, ready, in one transaction that holds the write
        lock from its first statement, so the version number and the descriptor keys read
        here are this writer's alone: keys are contiguous in label order, and a position
        maps to its row without a lookup table. Prompts are stored exactly as embedded, with
        the name of the rule that built them."""
        n_descriptors = sum(len(c.prompts) for c in draft.classes)
        with write_session(self.engine, f"publish library {draft.name!r}") as s:
            if draft.deletions_seen is not None and deletion_count(s, draft.name) != draft.deletions_seen:
                raise LibraryDeleted(
                    f"library {draft.name!r} was deleted while this version was being built: nothing was "
                    "published (submit the file again to create it anew)"
                )
            if draft.unless_same_as_newest and draft.source_sha256:
                _refuse_same_as_newest(s, draft, str(index["index_factory"]))
            version = next_version(s, draft.name)
            first = next_descriptor_key(s)
            row = LibraryRow(
                name=draft.name,
                version=version,
                status=schema.READY,
                created_at=dt.datetime.now(dt.timezone.utc),
                encoder_id=draft.encoder.id,
                encoder_name=draft.encoder.name,
                dim=draft.encoder.dim,
                logit_scale=float(draft.encoder.logit_scale),
                template=draft.template,
                baseline_template=draft.baseline_template,
                prompt_rule=rule_name(draft.template),
                aggregate=draft.aggregate,
                n_classes=len(draft.classes),
                n_descriptors=n_descriptors,
                n_prompts=len(draft.prompt_rows),
                source=draft.source,
                source_sha256=draft.source_sha256,
                index_key=key,
                recall_at_10=recall_at_10,
                first_descriptor_id=first,
                note=draft.note or None,
                **index,
            )
            s.add(row)
            s.flush()
            class_ids: list[int] = []
            for lo in range(0, len(draft.classes), INSERT_BATCH):
                class_ids += s.scalars(
                    insert(ClassRow).returning(ClassRow.id, sort_by_parameter_order=True),
                    [
                        {
                            "library_id": row.id,
                            "position": i,
                            "name": c.name,
                            "n_descriptors": len(c.prompts),
                            "baseline_prompt": c.baseline_prompt,
                        }
                        for i, c in enumerate(draft.classes[lo : lo + INSERT_BATCH], lo)
                    ],
                ).all()
            shared, examples = _shared_texts(draft.classes)
            multi = [
                {"library_id": row.id, "text": t, "classes": shared[t], "examples": ", ".join(names)}
                for t, names in examples.items()
            ]
            for lo in range(0, len(multi), INSERT_BATCH):
                s.execute(insert(SharedTextRow), multi[lo : lo + INSERT_BATCH])
            del multi, examples
            params = _descriptor_params(draft.classes, class_ids, row.id, first, shared)
            while batch := list(itertools.islice(params, INSERT_BATCH)):
                s.execute(insert(DescriptorRow), batch)
            return row.id, version

    def _checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into the database after a large write, so the
        log file does not keep the size of the biggest transaction (best effort)."""
        if self.engine.dialect.name != "sqlite":
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # a busy reader: the log is folded in later
            log.debug("WAL checkpoint skipped: %s", exc)


def _refuse_same_as_newest(s: Session, draft: LibraryDraft, factory: str) -> None:
    """Raise :class:`AlreadyPublished` when the newest ready version of the draft's name was
    built from the same content (sha256) with the same settings. Called in the publishing
    transaction, so two identical uploads at once publish one version."""
    newest = s.scalars(
        select(LibraryRow)
        .where(LibraryRow.name == draft.name, LibraryRow.status == schema.READY)
        .order_by(LibraryRow.version.desc())
        .limit(1)
    ).first()
    if newest is None:
        return
    ours = (draft.source_sha256, draft.template, draft.baseline_template, draft.encoder.id, factory)
    theirs = (newest.source_sha256, newest.template, newest.baseline_template, newest.encoder_id, newest.index_factory)
    if ours == theirs:
        raise AlreadyPublished(
            f"library {draft.name!r} version {newest.version} was built from the same file with the same settings: "
            "nothing was published",
            newest.version,
        )


def version_mark_key(name: str) -> str:
    """The ``meta`` key that remembers the highest version of ``name`` ever published, so a
    deleted version's number is never given to different content."""
    return "top_version:" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:40]


def next_version(s: Session, name: str) -> int:
    """The next version number of ``name``: above every version stored or ever deleted.
    Call it inside a write transaction (the lock makes the number this writer's)."""
    stored = s.scalar(select(func.max(LibraryRow.version)).where(LibraryRow.name == name)) or 0
    mark = s.scalar(select(Meta.value).where(Meta.key == version_mark_key(name)))
    return max(int(stored), int(mark or 0)) + 1


def deletion_mark_key(name: str) -> str:
    """The ``meta`` key that counts the deletes that emptied library ``name``."""
    return "emptied:" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:40]


def deletion_count(s: Session, name: str) -> int:
    """How many times a delete has removed the last version of ``name`` (0: never)."""
    return int(s.scalar(select(Meta.value).where(Meta.key == deletion_mark_key(name))) or 0)


TOP_DESCRIPTOR_KEY = "top_descriptor_id"  # meta: the highest descriptor key ever given


def next_descriptor_key(s: Session) -> int:
    """The first key of a new version's descriptors: above every key stored or ever deleted
    (a deleted version's keys, printed in some earlier ``--json``, never name other rows)."""
    stored = s.scalar(select(func.max(DescriptorRow.id))) or 0
    mark = s.scalar(select(Meta.value).where(Meta.key == TOP_DESCRIPTOR_KEY))
    return max(int(stored), int(mark or 0)) + 1


def factory_row(manifest: dict[str, Any]) -> dict[str, Any]:
    """The library row's fields about its retrieval index."""
    params = manifest["index_params"]
    return {"index_factory": manifest["index_factory"], "index_params": json.dumps(params) if params else None}
