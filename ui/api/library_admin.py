"""Store operations the service's routes call, in one place: every version of a library,
and deleting versions through the store's lifecycle (:mod:`whyclip.store.db.lifecycle`, the
same code as ``whyclip delete``: rows in one locked transaction, then the index folders; a
version with evaluation runs is refused unless ``with_runs``; cached vectors stay)."""

from __future__ import annotations

from whyclip.store import LibraryInfo, Store, delete_versions


def library_versions(store: Store, name: str) -> list[LibraryInfo]:
    """Every ready version of ``name``, newest first (unknown name: :class:`LibraryNotFound`)."""
    return store.versions(name)


def delete_library(store: Store, name: str, version: int | None = None, with_runs: bool = False) -> list[LibraryInfo]:
    """Delete one version (or every version) of ``name``; returns what was deleted."""
    doomed = [store.library(name, version)] if version is not None else library_versions(store, name)
    delete_versions(store, name, version, with_runs=with_runs)
    return doomed
