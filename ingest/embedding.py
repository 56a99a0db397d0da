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
    settled = getattr(encoder, "check_precision", None) is None
    prepare = getattr(encoder, "prepare_images", None)
    kept, shas, vectors, skipped, embedded = [], [], [], [], 0
    starts = list(range(0, len(files), BATCH))

    def read(start: int):
        """Bytes, hashes and cache hits of one batch (main thread: the database is read here)."""
        batch = list(range(start, min(start + BATCH, len(files))))
        data: dict[int, bytes] = {}
        unreadable = []
        for i in batch:
            try:
                data[i] = files[i].read_bytes()
            except OSError as exc:
                unreadable.append(f"{files[i]}: cannot be read ({exc.strerror or exc})")
        hashes = {i: hashlib.sha256(b).hexdigest() for i, b in data.items()}
        found = embedding_cache.lookup_hashes(store.engine, cache_key(encoder, "image"), list(hashes.values()))
        todo = [i for i in data if hashes[i] not in found]
        return batch, hashes, found, unreadable, todo, {i: data[i] for i in todo}

    def decode(todo: list[int], data: dict[int, bytes]):
        """Decoded and preprocessed new images of one batch (the background thread)."""
        pictures, ok, bad = [], [], []
        for i in todo:
            try:
                pictures.append(read_image_bytes(str(files[i]), data[i]))
                ok.append(i)
            except WhyclipError as exc:
                bad.append(str(exc))
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
            skipped += unreadable + bad
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
    for line in skipped:
        log.warning("skipped %s", line)
    dim = encoder.info.dim
    return kept, shas, np.array(vectors, dtype=np.float32).reshape(len(kept), dim), skipped, embedded
