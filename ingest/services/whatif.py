"""What-if edits that need the encoder or write: the added descriptors' vectors (through
the embedding cache, so only prompts it lacks are embedded) and publishing an edit as the
next version of its library. The exact answer itself is :mod:`whyclip.store.analysis.whatif`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from whyclip.ingest.embedding import embed_prompts
from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.store import Edit, Library, LibraryInfo, Store, edited_draft

log = logging.getLogger(__name__)


def added_vectors(
    store: Store, lib: Library, encoder, prompts: Sequence[str]
) -> tuple[dict[str, tuple[np.ndarray, float]], dict[str, bool], list[str]]:
    """``{prompt: (unit vector, norm)}`` of an edit's added prompts (``Edit.new_prompts``),
    which of them exceed the encoder's token limit (CLIP truncates them, as ingest does), and
    warnings. The encoder must be the one that made ``lib`` (an old id of it is renamed)."""
    prompts = list(prompts)
    if not prompts:
        return {}, {}, []
    check_library_encoder(lib, encoder, store)
    vectors, norms = embed_prompts(store, encoder, prompts)
    limit = encoder.max_tokens
    long = {p: n > limit for p, n in zip(prompts, encoder.count_tokens(prompts), strict=True)}
    warnings = [
        f"the added prompt {p!r} exceeds CLIP's {limit}-token limit and is truncated" for p, t in long.items() if t
    ]
    for w in warnings:
        log.warning(w)
    return {p: (v, float(n)) for p, v, n in zip(prompts, vectors, norms, strict=True)}, long, warnings


def save_edit(
    store: Store, lib: Library, edit: Edit, vectors: dict, truncated: dict | None = None, note: str = ""
) -> LibraryInfo:
    """Publish ``lib`` with ``edit`` applied as the next version of its name, with ``note``,
    through the store's atomic publish (the version appears whole or not at all; the edited
    version and its runs are untouched)."""
    return store.write_library(edited_draft(lib, edit, vectors, truncated, note=note.strip()))
