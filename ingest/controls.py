"""Control libraries for ``whyclip eval``: the same classes with their descriptors replaced,
so an evaluation can tell what the descriptors themselves add."""

from __future__ import annotations

import numpy as np

from whyclip.store import Library, Store, build_class_matrices

from .embedding import embed_prompts
from .prompts import Template

CONTROL_SEED = 0


def control_descriptors(lib: Library, seed: int = CONTROL_SEED) -> list[list[str]]:
    """WaffleCLIP-style control: for every class as many descriptors as it has, each made of
    as many random words as the one it replaces, drawn from all words of the library's
    descriptors (so the vocabulary, and nothing class-specific, is kept)."""
    texts = [[t for t, _ in lib.class_texts(c)] for c in range(len(lib.class_names))]
    words = sorted({w for ts in texts for t in ts for w in t.split()})
    if not words:
        return [[] for _ in texts]
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(words, size=max(1, len(t.split())))) for t in ts] for ts in texts]


def control_scorer(store: Store, lib: Library, encoder, seed: int = CONTROL_SEED):
    """The random-word control library's class matrices, and the descriptor texts."""
    descs = control_descriptors(lib, seed)
    template = Template(lib.info.template)
    prompts = [template.build(lib.class_names[c], d) for c, ds in enumerate(descs) for d in ds]
    vectors, norms = embed_prompts(store, encoder, prompts)
    offsets = np.concatenate([[0], np.cumsum([len(ds) for ds in descs])])
    return build_class_matrices(vectors, norms, offsets, np.asarray(lib.matrices.baseline)), vectors


