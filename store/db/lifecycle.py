"""A library version's life after ingest: delete it, collect what nothing owns, export it.

- :func:`delete_versions` removes a version's rows (libraries, classes, descriptors, shared
  texts) in one locked transaction, then its index folder; the embedding cache keeps its
  vectors, so re-ingesting embeds nothing. A delete that removes a library's last version
  counts in its deletion mark, so an ingest accepted before it publishes nothing after it
  (:attr:`~whyclip.store.records.LibraryDraft.deletions_seen`). Evaluation runs of the version are refused
  unless asked for: nothing is lost silently. Deleted version numbers and descriptor keys
  are remembered and never handed out again.
- :func:`collect_garbage` removes index folders no version owns (a killed ingest's, or a
  deleted version's whose removal failed) once they are older than an ingest could still
  be writing, and, with ``cache``, embedding-cache rows that no version's prompts, no
  version's name/description split (its bare descriptors) and no evaluation run's images use.
- :func:`export_library` writes a version as a library file plus a metadata sidecar
  (``FILE.meta.json``) holding its settings and its prompts exactly, from which
  ``whyclip ingest FILE`` takes the template and baseline back.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from whyclip.store.atomic import write_text_atomic
from whyclip.store.catalogue import TOP_DESCRIPTOR_KEY, Store, deletion_count, deletion_mark_key, version_mark_key
from whyclip.store.db.library_lookup import library_not_found
from whyclip.store.db.pair_descriptors import delete_pairs_of
from whyclip.store.db.schema import (
    CalibrationRow,
    ClassRow,
    DescriptorRow,
    EmbeddingRow,
    EvalImageRow,
    EvalResultRow,
    EvalRunRow,
    LibraryRow,
    Meta,
    SharedTextRow,
)
from whyclip.store.db.writes import write_session
from whyclip.store.errors import InputError, StoreError
from whyclip.store.names import check_text
from whyclip.store.records import DraftClass

GC_MIN_AGE_S = 15 * 60  # an unowned index folder younger than this may be an ingest's, still publishing
SIDECAR_SUFFIX = ".meta.json"
EXPORT_FORMATS = (".json", ".jsonl", ".csv")
CHUNK = 500


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _newest_mtime(path: Path) -> float:
    return max([path.stat().st_mtime] + [f.stat().st_mtime for f in path.rglob("*")])


def _set_mark(s: Session, key: str, value: int) -> None:
    """Raise the ``meta`` high-water mark ``key`` to ``value`` (never lower it)."""
    row = s.get(Meta, key)
    if row is None:
        s.add(Meta(key=key, value=str(value)))
    elif int(row.value) < value:
        row.value = str(value)


@dataclass(frozen=True)
class Deleted:
    name: str
    versions: list[int]
    runs: list[str]  # evaluation runs deleted with them
    folders: int  # index folders removed
    bytes: int
    left: list[str] = field(default_factory=list)  # folders that could not be removed (for gc)


def delete_versions(store: Store, name: str, version: int | None = None, *, with_runs: bool = False) -> Deleted:
    """Delete ``version`` of ``name`` (every version when None), rows first, in one
    transaction, then the index folders. Refuses, naming them, when evaluation runs use a
    version and ``with_runs`` is not set."""
    check_text(name, "library name")
    what = f"library {name!r}" + (f" version {version}" if version is not None else "")
    with write_session(store.engine, f"delete {what}") as s:
        q = select(LibraryRow).where(LibraryRow.name == name)
        if version is not None:
            q = q.where(LibraryRow.version == version)
        rows = s.scalars(q.order_by(LibraryRow.version)).all()
        if not rows:
            raise library_not_found(s, name, version, doing=" to delete")
        ids = [r.id for r in rows]
        runs = s.execute(select(EvalRunRow.id, EvalRunRow.name).where(EvalRunRow.library_id.in_(ids))).all()
        if runs and not with_runs:
            listed = ", ".join(repr(r.name) for r in runs[:5]) + (" ..." if len(runs) > 5 else "")
            raise InputError(
                f"{what} has {len(runs)} evaluation run(s) ({listed}): pass --with-runs to delete them too, "
                "or keep the version"
            )
        run_ids = [r.id for r in runs]
        s.execute(delete(CalibrationRow).where(CalibrationRow.library_id.in_(ids)))  # fitted on these versions' runs
        if run_ids:
            for table in (EvalResultRow, EvalImageRow):
                s.execute(delete(table).where(table.run_id.in_(run_ids)))
            s.execute(delete(EvalRunRow).where(EvalRunRow.id.in_(run_ids)))
        top_key = s.scalar(select(func.max(DescriptorRow.id)).where(DescriptorRow.library_id.in_(ids)))
        delete_pairs_of(s, ids)  # contrastive pair descriptors (FuDD) go with their version
        for owned in (DescriptorRow, SharedTextRow, ClassRow):
            s.execute(delete(owned).where(owned.library_id.in_(ids)))
        s.execute(delete(LibraryRow).where(LibraryRow.id.in_(ids)))
        _set_mark(s, version_mark_key(name), max(r.version for r in rows))
        left_over = s.scalar(select(func.count()).where(LibraryRow.name == name))
        if not left_over:  # the library is gone: a job that began before now must not publish it again
            _set_mark(s, deletion_mark_key(name), deletion_count(s, name) + 1)
        if top_key is not None:
            _set_mark(s, TOP_DESCRIPTOR_KEY, int(top_key))
        keys = [r.index_key for r in rows]
        versions = [r.version for r in rows]
    removed, freed, left = 0, 0, []
    for key in keys:  # the rows are gone: a failure here only leaves a folder for gc
        folder = store.home / "indexes" / store.store_id / key
        if not folder.exists():
            continue
        size = folder_bytes(folder)
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            left.append(f"{folder} ({exc.strerror or exc})")
            continue
        removed, freed = removed + 1, freed + size
    return Deleted(name, versions, [r.name for r in runs], removed, freed, left)


@dataclass(frozen=True)
class Freed:
    folders: list[str]  # removed (or, dry run, removable) index folders
    folder_bytes: int
    young: list[str]  # unowned folders left because an ingest may still be publishing them
    cache_rows: int = 0
    cache_bytes: int = 0
    dry_run: bool = False
    kept: dict[str, int] = field(default_factory=dict)  # with cache: rows kept as in use, by kind (KEPT_KINDS)


#: the kinds of cache rows gc keeps, in the order it names them
KEPT_KINDS = ("prompts", "split", "images")


def collect_garbage(
    store: Store, *, cache: bool = False, dry_run: bool = False, min_age_s: float = GC_MIN_AGE_S
) -> Freed:
    """Remove index folders no version owns (older than ``min_age_s``) and, with ``cache``,
    cache rows nothing uses; with ``dry_run`` only say what would go. Holds the write lock
    throughout, so no version is published or deleted meanwhile."""
    root = store.home / "indexes" / store.store_id
    with write_session(store.engine, "collect garbage") as s:
        owned = set(s.scalars(select(LibraryRow.index_key)).all())
        gone: list[str] = []
        young: list[str] = []
        size = 0
        now = time.time()
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if folder.name in owned or not folder.is_dir():
                continue
            if now - _newest_mtime(folder) < min_age_s:
                young.append(str(folder))
                continue
            size += folder_bytes(folder)
            gone.append(str(folder))
        rows, row_bytes, kept = _unused_cache_rows(store, s, delete_them=not dry_run) if cache else (0, 0, {})
    if not dry_run:
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
    return Freed(gone, size, young, rows, row_bytes, dry_run, kept)


def used_prompts(store: Store) -> dict[str, set[str]]:
    """Encoder id -> the sha256 of every prompt a ready version embeds (its descriptor
    prompts, baseline prompts and pair descriptors' prompts, as the Library gives them) or
    reads from the cache (its bare descriptors, for the name/description split)."""
    prompts, split = _used_texts(store)
    return {enc: prompts.get(enc, set()) | split.get(enc, set()) for enc in prompts.keys() | split.keys()}


def _used_texts(store: Store) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(encoder id -> sha256 of the prompts ready versions embed, encoder id -> sha256 of
    their bare descriptors, which ``whyclip eval`` caches and explain's name/description
    split reads from the cache: :meth:`~whyclip.store.library.Library.bare_scorer`)."""
    from whyclip.store.db.embedding_cache import text_key

    used: dict[str, set[str]] = {}
    split: dict[str, set[str]] = {}
    for info in store.libraries(every_version=True):
        try:
            lib = store.load(info.name, info.version)
        except StoreError as exc:
            raise StoreError(
                f"cannot tell which cached vectors library {info.name!r} v{info.version} uses ({exc}); "
                f"delete that version ('whyclip delete {info.name} --version {info.version}') and run gc again"
            ) from None
        texts = [pair for c in range(len(lib.class_names)) for pair in lib.class_texts(c)]
        prompts = [p for _, p in texts] + lib.baseline_prompts
        prompts += [d.prompt for pair in lib.stored_pairs() for d in pair.descriptions]  # FuDD pair descriptors
        used.setdefault(info.encoder_id, set()).update(text_key(p) for p in prompts)
        split.setdefault(info.encoder_id, set()).update(text_key(t) for t, _ in texts)
    return used, split


def _unused_cache_rows(store: Store, s: Session, delete_them: bool) -> tuple[int, int, dict[str, int]]:
    """Count (and delete) cache rows no version's prompts, no version's name/description
    split and no run's images use; and count the rows kept, by kind (:data:`KEPT_KINDS`). A
    text row is kept when its key is a version's encoder id or begins with it and "/" (a
    precision), and its hash is one of that encoder's prompts or bare descriptors; an image
    row when a run has the image. eval's control prompts (random words, swapped
    descriptors) are none of these: they go, and the next eval embeds them again."""
    used, split = _used_texts(store)
    images = set(s.scalars(select(EvalImageRow.sha256).distinct()).all())
    n, size = 0, 0
    kept = dict.fromkeys(KEPT_KINDS, 0)
    for key in s.scalars(select(EmbeddingRow.encoder_key).distinct()).all():
        is_image = key.endswith("/image") or "/image/" in key  # image rows, any pixel rule
        prompts: set[str] = set()
        bare: set[str] = set()
        for encoder_id in used.keys() | split.keys():
            if not is_image and (key == encoder_id or key.startswith(encoder_id + "/")):
                prompts |= used.get(encoder_id, set())
                bare |= split.get(encoder_id, set())
        q = select(EmbeddingRow.id, EmbeddingRow.text_sha256, func.length(EmbeddingRow.vector))
        doomed = []
        for i, sha, b in s.execute(q.where(EmbeddingRow.encoder_key == key)):
            if is_image and sha in images:
                kept["images"] += 1
            elif sha in prompts:
                kept["prompts"] += 1
            elif sha in bare:
                kept["split"] += 1
            else:
                doomed.append((i, b))
        n, size = n + len(doomed), size + sum(int(b or 0) for _, b in doomed)
        if delete_them:
            for start in range(0, len(doomed), CHUNK):
                s.execute(
                    delete(EmbeddingRow).where(EmbeddingRow.id.in_([i for i, _ in doomed[start : start + CHUNK]]))
                )
    return n, size, kept


# -- export ---------------------------------------------------------------------------------


def library_text(classes: list[tuple[str, list[str]]], suffix: str) -> str:
    """A library file in the format of ``suffix``, classes and descriptors in label order."""
    if suffix == ".json":
        return json.dumps(dict(classes), ensure_ascii=False, indent=2) + "\n"
    if suffix == ".jsonl":
        lines = [json.dumps({"class": c, "descriptor": d}, ensure_ascii=False) for c, ds in classes for d in ds]
        lines += [json.dumps({"class": c}, ensure_ascii=False) for c, ds in classes if not ds]
        return "\n".join(lines) + "\n"
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "descriptor"])
    for c, ds in classes:
        writer.writerows([[c, d] for d in ds] or [[c, ""]])
    return buf.getvalue()


def _whyclip_version() -> str:
    try:
        return metadata.version("whyclip")
    except metadata.PackageNotFoundError:
        return "unknown"


def _write_atomically(path: Path, text: str) -> None:
    write_text_atomic(path, text)  # a temporary name of its own: two exports never share one


def export_library(
    store: Store, name: str, version: int | None, out: str | Path, *, force: bool = False
) -> dict[str, Any]:
    """Write ``name`` (newest or ``version``) to ``out`` (.json, .jsonl or .csv) and its
    sidecar ``out + .meta.json``; return the sidecar's contents."""
    out = Path(out)
    if out.suffix.lower() not in EXPORT_FORMATS:
        raise InputError(f"{out}: cannot tell the format from {out.suffix!r}: end --out with .json, .jsonl or .csv")
    sidecar = sidecar_path(out)
    for path in (out, sidecar):
        if path.exists() and not force:
            raise InputError(f"{path} exists: choose another --out, or pass --force to overwrite it")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent} is not a folder: create it first or choose another --out")
    lib = store.load(name, version)
    info = lib.info
    texts = [lib.class_texts(c) for c in range(len(lib.class_names))]
    classes = [(c, [t for t, _ in ts]) for c, ts in zip(lib.class_names, texts, strict=True)]
    body = library_text(classes, out.suffix.lower())
    meta = {
        "whyclip_export": 1,
        "library_file": out.name,
        "name": info.name,
        "version": info.version,
        "template": info.template,
        "baseline_template": info.baseline_template,
        "aggregate": info.aggregate,
        "encoder_id": info.encoder_id,
        "encoder_name": info.encoder_name,
        "dim": info.dim,
        "logit_scale": info.logit_scale,
        "n_classes": info.n_classes,
        "n_descriptors": info.n_descriptors,
        "n_prompts": info.n_prompts,
        "index_factory": info.index_factory,
        "source": info.source,
        "source_sha256": info.source_sha256,
        "created_at": info.created_at.isoformat(),
        "whyclip_version": _whyclip_version(),
        "classes": [
            {"name": c, "baseline_prompt": b, "descriptors": [{"text": t, "prompt": p} for t, p in ts]}
            for c, b, ts in zip(lib.class_names, lib.baseline_prompts, texts, strict=True)
        ],
    }
    _write_atomically(out, body)
    _write_atomically(sidecar, json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    return meta


def sidecar_path(library_file: str | Path) -> Path:
    p = Path(library_file)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(library_file: str | Path) -> dict[str, Any] | None:
    """The export sidecar beside ``library_file``, or None when there is none."""
    path = sidecar_path(library_file)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable whyclip export sidecar ({exc}): fix or remove it") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("template", "baseline_template")):
        raise InputError(f"{path}: not a whyclip export sidecar (no template and baseline_template): fix or remove it")
    return meta


def sidecar_prompt_changes(meta: dict[str, Any], classes: Sequence[DraftClass]) -> int:
    """How many of the prompts ``classes`` (the plan's DraftClass list) would embed differ
    from the exported ones, for the same class and descriptor."""
    exported = {(c["name"], d["text"]): d["prompt"] for c in meta.get("classes", []) for d in c["descriptors"]}
    baselines = {c["name"]: c["baseline_prompt"] for c in meta.get("classes", [])}
    changed: int = sum(
        exported.get((c.name, t), p) != p for c in classes for t, p in zip(c.descriptors, c.prompts, strict=True)
    )
    baselines_changed: int = sum(baselines.get(c.name, c.baseline_prompt) != c.baseline_prompt for c in classes)
    return changed + baselines_changed
