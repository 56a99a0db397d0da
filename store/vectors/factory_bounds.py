"""Bounds on a retrieval index factory string, so that the string a client sends cannot
decide how much memory the server allocates.

Two checks, both before FAISS allocates anything:

- :func:`check_factory_bounds` (the string alone, before an upload is accepted): every number at
  most :data:`MAX_NUMBER`, an IMI grid of at most 2^20 cells, codes of at most 16 bits.
  ``IVF10000000,Flat`` is refused here: FAISS would allocate ten million inverted lists
  on creation, before a single vector is added.
- :func:`check_factory_size` (once the library's size is known, before any embedding): the index
  must be trainable on the library's descriptors (at least as many as the centroids it
  fits) and its estimated memory, beyond the library's own vectors, at most
  :data:`EXTRA_BYTES` or twice the vectors, whichever is larger.

The estimate counts what grows with the string's numbers: coarse centroids and inverted
lists (``IVF``, ``IMI``), codebooks (``PQ``, ``RQ``, ``LSQ``), graph links (``HNSW``,
``NSG``) and transforms (``PCA``, ``OPQ``, ``RR``, ``ITQ``). It is an estimate: FAISS's
own working memory during training comes on top, of the same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from whyclip.store.errors import InputError

MAX_NUMBER = 65_536  # any number in a factory string: lists, sub-quantizers, links, dimensions
MAX_IMI_BITS = 20  # an IMI grid of 2^20 cells at most
MAX_CODE_BITS = 16  # bits per code of a product or residual quantizer
EXTRA_BYTES = 1 << 30  # the index's estimated memory beyond the vectors: 1 GiB, or twice the vectors
LIST_BYTES = 48  # an empty inverted list in FAISS (two std::vector headers)
SUGGEST = "use e.g. 'Flat', 'HNSW32' or 'IVF<n>,Flat' with n about 4 x the square root of the descriptors"


@dataclass(frozen=True)
class FactoryShape:
    """What a factory string asks for that costs memory: centroids to train, inverted
    lists, codebook centroids, graph links per vector and transform matrices (floats)."""

    centroids: int = 0  # coarse centroids (IVF nlist, or one IMI side), each a dim-vector
    lists: int = 0  # inverted lists
    codebook_centroids: int = 0  # 2^bits of the largest codebook: the training points it needs
    codebook_floats: int = 0  # floats of every codebook together
    links: int = 0  # graph links per vector (HNSW: 2M at level 0, NSG: R)
    transform_floats: int = 0  # floats of the pre-transforms' matrices


def _numbers(factory: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", factory)]


def check_factory_bounds(factory: str) -> FactoryShape:
    """Refuse a factory string whose numbers alone ask for too much (:class:`InputError`);
    returns what it asks for, for :func:`check_factory_size`. The library's size is not needed."""
    big = [n for n in _numbers(factory) if n > MAX_NUMBER]
    if big:
        raise InputError(f"index {factory!r}: {big[0]:,} is over the limit of {MAX_NUMBER:,} for any number: {SUGGEST}")
    return shape(factory, dim=0)


def shape(factory: str, dim: int) -> FactoryShape:
    """What ``factory`` asks for, at dimension ``dim`` (0: the dimension is not known yet,
    the dimension-sized parts count as 0)."""
    centroids = lists = book = book_floats = links = transform = 0
    out_dim = dim
    for part in re.split(r"[,_+]", factory):
        if m := re.fullmatch(r"IVF(\d+)", part):
            centroids, lists = max(centroids, int(m[1])), lists + int(m[1])
        elif m := re.fullmatch(r"IMI(\d+)x(\d+)", part):
            bits = int(m[1]) * int(m[2])
            if bits > MAX_IMI_BITS:
                raise InputError(
                    f"index {factory!r}: an IMI grid of 2^{bits} cells is over the limit of 2^{MAX_IMI_BITS}: {SUGGEST}"
                )
            centroids, lists = max(centroids, 1 << int(m[2])), lists + (1 << bits)
        elif m := re.fullmatch(r"(PQ|RQ|PRQ|LSQ|PLSQ|ZnLattice)(\d+)(?:x(\d+))?(?:x(\d+))?(fs|np)?", part):
            count = int(m[2]) * (int(m[3]) if m[4] else 1)
            bits = int(m[4] or m[3] or (4 if m[5] == "fs" else 8))
            if bits > MAX_CODE_BITS:
                raise InputError(
                    f"index {factory!r}: codes of {bits} bits are over the limit of {MAX_CODE_BITS}: {SUGGEST}"
                )
            book = max(book, 1 << bits)
            # a product quantizer's codebooks span the dimension once; a residual one's each span all of it
            book_floats += (1 << bits) * (out_dim if m[1] in ("PQ", "PRQ", "PLSQ") else out_dim * count)
        elif m := re.fullmatch(r"HNSW(\d+)", part):
            links = max(links, 2 * int(m[1]))
        elif m := re.fullmatch(r"NSG(\d+)", part):
            links = max(links, int(m[1]))
        elif m := re.fullmatch(r"(?:PCAW?R?|RR|ITQ)(\d+)", part):
            transform += out_dim * int(m[1])
            out_dim = int(m[1])
        elif m := re.fullmatch(r"OPQ(\d+)(?:_(\d+))?", part):
            transform += out_dim * out_dim
    return FactoryShape(centroids, lists, book, book_floats, links, transform)


def estimate_bytes(factory: str, n_descriptors: int, dim: int) -> int:
    """The index's estimated memory beyond the library's own vectors (bytes)."""
    s = shape(factory, dim)
    floats = s.centroids * dim + s.codebook_floats + s.transform_floats
    return 4 * floats + LIST_BYTES * s.lists + 4 * s.links * n_descriptors


def check_factory_size(factory: str, n_descriptors: int, dim: int) -> None:
    """Refuse, before anything is allocated, an index the library cannot train or whose
    estimated memory is over the budget (:class:`InputError`, naming both numbers)."""
    s = check_factory_bounds(factory)
    need = max(s.centroids, s.codebook_centroids)
    if need > n_descriptors:
        raise InputError(
            f"index {factory!r} fits {need:,} centroids, so it needs at least {need:,} descriptors to train; "
            f"the library has {n_descriptors:,}: {SUGGEST}"
        )
    budget = max(EXTRA_BYTES, 2 * 4 * n_descriptors * dim)
    estimate = estimate_bytes(factory, n_descriptors, dim)
    if estimate > budget:
        raise InputError(
            f"index {factory!r} would take about {estimate / 2**20:,.0f} MiB beyond the library's vectors, "
            f"over the limit of {budget / 2**20:,.0f} MiB for {n_descriptors:,} descriptors: {SUGGEST}"
        )
