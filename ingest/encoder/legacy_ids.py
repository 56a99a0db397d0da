"""Recognising stores made under the old, path-dependent encoder ids.

Libraries and cache rows written before content ids (:mod:`.fingerprint`) carry an id
that hashed the model's load path and the transformers version. They are the same encoder
as today's when either

- one of the encoder's legacy candidates reproduces the id (the old algorithm run with the
  library's recorded model name or folder, the folder as given, the current load path), or
- no candidate does (a moved folder *and* an upgraded transformers), but re-embedding a
  small sample of the library's prompts gives its stored vectors (cosine >= 0.999): the
  content decides, not a path.

A read command (explain, the dashboard) accepts such a library in memory and writes
nothing; a write command (ingest, eval) renames the old id to the new one in the store
(:func:`whyclip.store.db.encoder_ids.rename_encoder_id`), once.
"""

from __future__ import annotations

import logging

import numpy as np

from whyclip.ingest.encoder.fingerprint import is_legacy_id
from whyclip.store import Library, Store, WhyclipError, encoder_ids

log = logging.getLogger(__name__)
SAMPLE = 8  # prompts re-embedded to compare a library's stored vectors with this encoder's
MIN_COSINE = 0.999


def _candidates(encoder, names) -> set[str]:
    legacy = getattr(encoder, "legacy_ids", None)
    return legacy(list(names)) if legacy else set()


def same_vectors(lib: Library, encoder, sample: int = SAMPLE) -> bool:
    """Whether ``encoder`` gives the stored vectors of a spread sample of ``lib``'s prompts."""
    n = lib.info.n_descriptors
    offsets = lib.matrices.offsets
    if n:
        rows = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(int))
        prompts = []
        for row in rows:
            c = int(np.searchsorted(offsets, row, side="right") - 1)
            prompts.append(lib.class_texts(c)[row - int(offsets[c])][1])
        stored = np.asarray(lib.vectors[rows], dtype=np.float32)
    else:  # every class falls back to its baseline prompt
        rows = np.unique(np.linspace(0, len(lib.class_names) - 1, min(sample, len(lib.class_names))).astype(int))
        prompts = [lib.baseline_prompts[c] for c in rows]
        stored = np.asarray(lib.matrices.baseline[rows], dtype=np.float32)
    if not prompts:
        return False
    fresh, _ = encoder.embed_texts(prompts)
    cosine = float(np.min(np.sum(fresh * stored, axis=1)))
    log.info(
        "library %s: %d prompts re-embedded, lowest cosine with the stored vectors %.6f",
        lib.info.name,
        len(prompts),
        cosine,
    )
    return cosine >= MIN_COSINE


def is_same_encoder(lib: Library, encoder) -> bool:
    """Whether ``lib``'s legacy encoder id names ``encoder`` (a candidate id, else content)."""
    old = lib.info.encoder_id
    if not is_legacy_id(old) or lib.info.dim != encoder.info.dim:
        return False
    return old in _candidates(encoder, [lib.info.encoder_name]) or same_vectors(lib, encoder)


def check_library_encoder(lib: Library, encoder, store: Store | None = None) -> None:
    """Refuse ``lib`` unless ``encoder`` made its vectors (:class:`EncoderMismatch`). A
    library under a legacy id of this encoder is accepted; with ``store`` (a write
    command) the old id is renamed to the new one in the store too."""
    new = encoder.info.id
    old = lib.info.encoder_id
    if old == new:
        return
    if not is_same_encoder(lib, encoder):
        lib.check_encoder(new)  # raises, naming both ids
    if store is not None:
        encoder_ids.rename_encoder_id(store.engine, old, new)
    else:
        log.info(
            "library %s: encoder id %s is this encoder's old id (%s); 'whyclip ingest' or 'eval' records the new one",
            lib.info.name,
            old,
            new,
        )
    lib.use_encoder_id(new)


def adopt_legacy_ids(store: Store, encoder) -> list[str]:
    """Rename every legacy id in the store that names ``encoder`` (ingest calls this before
    it looks up the cache, so vectors cached under an old id are found). Returns the ids
    renamed. Cache rows of an id no library has can only match a candidate."""
    dim = encoder.info.dim
    by_id = encoder_ids.library_encoders(store.engine)
    legacy = sorted(
        i
        for i in set(by_id) | encoder_ids.cache_encoder_ids(store.engine)
        if is_legacy_id(i) and i.startswith(f"clip-{dim}-")
    )
    if not legacy:
        return []
    candidates = _candidates(encoder, [n for i in legacy for n in by_id.get(i, [])])
    renamed = []
    for old in legacy:
        if old not in candidates and not _content_matches(store, old, encoder):
            continue
        encoder_ids.rename_encoder_id(store.engine, old, encoder.info.id)
        renamed.append(old)
    return renamed


def _content_matches(store: Store, old: str, encoder) -> bool:
    """Whether the newest ready library built under ``old`` has ``encoder``'s vectors."""
    for name, version in encoder_ids.libraries_with_encoder(store.engine, old)[:1]:
        try:
            return same_vectors(store.load(name, version), encoder)
        except WhyclipError as exc:  # its index files are gone: nothing to compare
            log.info("cannot compare library %s v%d with this encoder: %s", name, version, exc)
    return False
