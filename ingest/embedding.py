"""Embedding through the store's cache: prompts by their text, image files by the sha256
of their bytes. What the cache has is not embedded again; what is embedded is saved.

The cache key names the encoder's precision, and an encoder checks a lower precision
against fp32 on its first texts or images and may fall back: the key is therefore settled
(:func:`settle_precision`) before the first vector is embedded, and what was looked up under
the old key is looked up again, so a run never mixes vectors of two precisions and never
saves fp32 vectors under a bf16 key."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from whyclip.ingest.images import PIXEL_RULES, read_image_bytes
from whyclip.store import Store, WhyclipError, embedding_cache

log = logging.getLogger(__name__)
BATCH = 32  # images read, encoded and cached at a time


def cache_key(encoder, modality: str) -> str:
    """The cache key of the encoder's ``modality`` vectors (images: precision and pixel rules)."""
    if modality == "text":
        return encoder.cache_key
    return getattr(encoder, "image_cache_key", None) or f"{encoder.cache_key}/image/{PIXEL_RULES}"


def settle_precision(encoder, modality: str, sample) -> bool:
    """Run the encoder's precision check (if it has one) on ``sample``; True when that
    changed the modality's cache key (a fallback to fp32), so lookups made before are stale."""
    check = getattr(encoder, "check_precision", None)
    if check is None or len(sample) == 0:
        return False
    before = cache_key(encoder, modality)
    check(modality, sample)
    return cache_key(encoder, modality) != before


def embed_prompts(store: Store, encoder, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and norms of ``prompts``, through the embedding cache."""
    distinct = list(dict.fromkeys(prompts))
    found = embedding_cache.lookup(store.engine, encoder.cache_key, distinct)
    missing = [p for p in distinct if p not in found]
    if missing and settle_precision(encoder, "text", missing[:16]):
        found = embedding_cache.lookup(store.engine, encoder.cache_key, distinct)
        missing = [p for p in distinct if p not in found]
    if missing:
        vectors, norms = encoder.embed_texts(missing)
        embedding_cache.save(store.engine, encoder.cache_key, missing, vectors, norms)
        found.update({t: (v, float(n)) for t, v, n in zip(missing, vectors, norms, strict=True)})
    dim = encoder.info.dim
    vecs = np.array([found[p][0] for p in prompts], dtype=np.float32).reshape(len(prompts), dim)
    return vecs, np.array([found[p][1] for p in prompts], dtype=np.float32)


def embed_image_files_cached(
    store: Store, encoder, files: list[Path], progress: Callable[[int, int], None] | None = None
) -> tuple[list[int], list[str], np.ndarray, list[str], int]:
    """Unit vectors of the readable files, through the image cache (by file sha256).

    Batches of ``BATCH`` files: while one batch encodes, the next is read, looked up in the
    cache, and its new images are decoded and preprocessed in a background thread.
    Returns the kept indices into ``files``, their hashes, their vectors, "path: reason"
    for each unreadable file (reported and skipped), and how many were embedded now."""
    if hasattr(encoder, "embed_image_chunks"):  # on a Ray cluster
        return _embed_image_files_remote(store, encoder, files, progress)
    settled = getattr(encoder, "check_precision", None) is None
    prepare = getattr(encoder, "prepare_images", None)
    kept, shas, vectors, embedded = [], [], [], 0
    skipped: dict[int, str] = {}  # by file: the run records them in file order
    starts = list(range(0, len(files), BATCH))

    def read(start: int):
        """Bytes, hashes and cache hits of one batch (main thread: the database is read here)."""
        batch = list(range(start, min(start + BATCH, len(files))))
        data: dict[int, bytes] = {}
        unreadable = {}
        for i in batch:
            try:
                data[i] = files[i].read_bytes()
            except OSError as exc:
                unreadable[i] = f"{files[i]}: cannot be read ({exc.strerror or exc})"
        hashes = {i: hashlib.sha256(b).hexdigest() for i, b in data.items()}
        found = embedding_cache.lookup_hashes(store.engine, cache_key(encoder, "image"), list(hashes.values()))
        todo = [i for i in data if hashes[i] not in found]
        return batch, hashes, found, unreadable, todo, {i: data[i] for i in todo}

    def decode(todo: list[int], data: dict[int, bytes]):
        """Decoded and preprocessed new images of one batch (the background thread)."""
        pictures, ok, bad = [], [], {}
        for i in todo:
            try:
                pictures.append(read_image_bytes(str(files[i]), data[i]))
                ok.append(i)
            except WhyclipError as exc:
                bad[i] = str(exc)
        return (prepare(pictures) if prepare and pictures else pictures), ok, bad

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="whyclip-decode") as pool:
        pending = None
        for k, start in enumerate(starts):
            if pending is None:
                batch, hashes, found, unreadable, todo, data = read(start)
                job = pool.submit(decode, todo, data)
            else:
                batch, hashes, found, unreadable, todo, job = pending
            pending = None
            if k + 1 < len(starts):  # the next batch decodes while this one encodes
                nb, nh, nf, nu, nt, nd = read(starts[k + 1])
                pending = (nb, nh, nf, nu, nt, pool.submit(decode, nt, nd))
            pictures, todo, bad = job.result()
            skipped.update(unreadable)
            skipped.update(bad)
            if len(pictures) and not settled:
                settled = True
                if settle_precision(encoder, "image", pictures if prepare else pictures[:16]):  # fell back: stale
                    return embed_image_files_cached(store, encoder, files, progress)
            if len(pictures):
                vecs, norms = encoder.embed_images(pictures)
                embedding_cache.save_hashes(
                    store.engine, cache_key(encoder, "image"), [hashes[i] for i in todo], vecs, norms
                )
                found.update({hashes[i]: (v, float(n)) for i, v, n in zip(todo, vecs, norms, strict=True)})
                embedded += len(pictures)
            for i in batch:
                if i in hashes and hashes[i] in found:
                    kept.append(i)
                    shas.append(hashes[i])
                    vectors.append(found[hashes[i]][0])
            if progress:
                progress(batch[-1] + 1, len(files))
    lines = [skipped[i] for i in sorted(skipped)]
    for line in lines:
        log.warning("skipped %s", line)
    dim = encoder.info.dim
    return kept, shas, np.array(vectors, dtype=np.float32).reshape(len(kept), dim), lines, embedded


def _embed_image_files_remote(
    store: Store, encoder, files: list[Path], progress: Callable[[int, int], None] | None = None
) -> tuple[list[int], list[str], np.ndarray, list[str], int]:
    """:func:`embed_image_files_cached` with the embedding on a Ray cluster
    (:class:`whyclip.ingest.cluster.ClusterEncoder`). Here every file is read once and
    hashed (its bytes not kept) and the hashes looked up; each ``BATCH`` of files leaves
    what the cache lacks as one chunk (the batches the local path encodes), which a worker
    reads, checks against the hash, decodes and embeds; each chunk is saved as it returns."""
    hashes: dict[int, str] = {}
    skipped: dict[int, str] = {}  # by file, so the run records them in file order
    for i, file in enumerate(files):
        try:
            hashes[i] = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError as exc:
            skipped[i] = f"{file}: cannot be read ({exc.strerror or exc})"

    def missing() -> tuple[dict, list[list[int]]]:
        found = embedding_cache.lookup_hashes(store.engine, cache_key(encoder, "image"), sorted(set(hashes.values())))
        windows = [range(s, min(s + BATCH, len(files))) for s in range(0, len(files), BATCH)]
        todo = [[i for i in w if i in hashes and hashes[i] not in found] for w in windows]
        return found, [t for t in todo if t]

    found, chunks = missing()
    if chunks and settle_precision(encoder, "image", [str(files[i]) for i in chunks[0]]):  # fell back: stale
        found, chunks = missing()
    done = len(files) - sum(len(c) for c in chunks)
    if progress:
        progress(done, len(files))
    embedded = 0
    payload = [[(str(files[i]), hashes[i]) for i in chunk] for chunk in chunks]
    for number, positions, vecs, norms, errors in encoder.embed_image_chunks(payload):
        chunk = chunks[number]
        ok = [chunk[p] for p in positions]
        if ok:
            embedding_cache.save_hashes(store.engine, cache_key(encoder, "image"), [hashes[i] for i in ok], vecs, norms)
            found.update({hashes[i]: (v, float(n)) for i, v, n in zip(ok, vecs, norms, strict=True)})
        skipped.update({chunk[p]: line for p, line in errors})
        embedded += len(ok)
        done += len(chunk)
        if progress:
            progress(done, len(files))
    kept = [i for i in range(len(files)) if i in hashes and hashes[i] in found]
    lines = [skipped[i] for i in sorted(skipped)]
    for line in lines:
        log.warning("skipped %s", line)
    dim = encoder.info.dim
    vectors = np.array([found[hashes[i]][0] for i in kept], dtype=np.float32).reshape(len(kept), dim)
    return kept, [hashes[i] for i in kept], vectors, lines, embedded
