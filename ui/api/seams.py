"""Store operations the service needs that the store's lifecycle module (issue 9:
``whyclip.store.db.lifecycle``: ``libraries --all``, ``delete``) is adding on another
branch. SEAM FOR THE LEAD: when that lands, make these two functions call it and keep
their signatures; the routes and tests use only these."""

from __future__ import annotations

import shutil

from sqlalchemy import delete, select

from whyclip.store import LibraryInfo, Store
from whyclip.store.db import schema
from whyclip.store.db.engine import begin_write
from whyclip.store.db.schema import LibraryRow
from whyclip.store.errors import LibraryNotFound


def library_versions(store: Store, name: str) -> list[LibraryInfo]:
    """Every ready version of ``name``, newest first (unknown name: :class:`LibraryNotFound`)."""
    newest = store.library(name)  # names the known libraries when ``name`` is not one
    with store.engine.connect() as conn:
        numbers = conn.execute(
            select(LibraryRow.version)
            .where(LibraryRow.name == name, LibraryRow.status == schema.READY)
            .order_by(LibraryRow.version.desc())
        ).scalars().all()  # fmt: skip
    return [newest if v == newest.version else store.library(name, v) for v in numbers]


def delete_library(store: Store, name: str, version: int | None = None) -> list[LibraryInfo]:
    """Delete one version (or every version) of ``name``: rows in one write transaction
    (classes, descriptors and runs go with them by cascade), then the index folders.
    Cached prompt vectors stay. Minimal stand-in for the lifecycle helper's ``delete``."""
    doomed = [store.library(name, version)] if version is not None else library_versions(store, name)
    with begin_write(store.engine) as conn:
        conn.execute(delete(LibraryRow).where(LibraryRow.id.in_([i.id for i in doomed])))
    for info in doomed:
        shutil.rmtree(store.index_folder(info), ignore_errors=True)
    return doomed
