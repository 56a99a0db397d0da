"""Control libraries for ``whyclip eval``: the same classes with their descriptors replaced
or their prompts changed, so an evaluation can tell what the descriptors themselves add.
Every control's prompts go through the embedding cache, so each is embedded once.

* **shuffled descriptor words** (``control:``): every descriptor replaced by as many words
  drawn from all words of the library's descriptors (the vocabulary kept, nothing
  class-specific).
* **random words** (``words<j>:``, ``WORD_DRAWS`` seeded draws): every descriptor replaced
  by as many words from a general English vocabulary (:mod:`whyclip.ingest.vocabulary`), as WaffleCLIP
  (Roth et al., ICCV 2023) does.
* **swap** (``swap:``): every class gets another class's descriptors under a seeded
  permutation with no fixed point, keeping its own name in the prompt.
* **bare descriptors** (``bare:``): the library's descriptors without the class name
  (template ``{descriptor}``): the description alone, for the name/description split.
"""

from __future__ import annotations

import numpy as np

from whyclip.ingest.embedding import embed_prompts
from whyclip.ingest.vocabulary import general_words
from whyclip.store import Library, Store, Template, build_class_matrices

CONTROL_SEED = 0
WORD_DRAWS = 5


def _texts(lib: Library) -> list[list[str]]:
    return [[t for t, _ in lib.class_texts(c)] for c in range(len(lib.class_names))]


def _replace_words(texts: list[list[str]], words, rng: np.random.Generator) -> list[list[str]]:
    return [[" ".join(rng.choice(words, size=max(1, len(t.split())))) for t in ts] for ts in texts]


def control_descriptors(lib: Library, seed: int = CONTROL_SEED) -> list[list[str]]:
    """Shuffled descriptor words: for every class as many descriptors as it has, each made
    of as many random words as the one it replaces, drawn from all words of the library's
    descriptors."""
    texts = _texts(lib)
    words = sorted({w for ts in texts for t in ts for w in t.split()})
    if not words:
        return [[] for _ in texts]
    return _replace_words(texts, np.array(words), np.random.default_rng(seed))


def random_word_descriptors(lib: Library, draw: int, seed: int = CONTROL_SEED) -> list[list[str]]:
    """Random words from the general vocabulary, draw ``draw`` (seeded by ``seed`` and it)."""
    rng = np.random.default_rng([seed, 1 + draw])
    return _replace_words(_texts(lib), np.array(general_words()), rng)


def swap_permutation(n_classes: int, seed: int = CONTROL_SEED) -> np.ndarray:
    """A seeded permutation with no fixed point (class ``c`` gets the descriptors of
    ``perm[c]``): a random shuffle, then every class shifted by one place along it."""
    if n_classes < 2:
        return np.arange(n_classes)
    order = np.random.default_rng([seed, 0]).permutation(n_classes)
    perm = np.empty(n_classes, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def _scorer(store: Store, lib: Library, encoder, prompts: list[list[str]]):
    vectors, norms = embed_prompts(store, encoder, [p for ps in prompts for p in ps])
    offsets = np.concatenate([[0], np.cumsum([len(ps) for ps in prompts])]).astype(np.int64)
    return build_class_matrices(vectors, norms, offsets, np.asarray(lib.matrices.baseline)), vectors


def control_scorer(store: Store, lib: Library, encoder, seed: int = CONTROL_SEED):
    """The shuffled-descriptor-words library's class matrices, and its prompt vectors."""
    template = Template(lib.info.template)
    descs = control_descriptors(lib, seed)
    return _scorer(
        store, lib, encoder, [[template.build(lib.class_names[c], d) for d in ds] for c, ds in enumerate(descs)]
    )


def extra_control_scorers(store: Store, lib: Library, encoder, seed: int = CONTROL_SEED) -> dict:
    """``prefix -> (class matrices, prompt vectors)`` of the controls whose outcome is not
    known in advance: the bare descriptors, the swap and the random-word draws."""
    template = Template(lib.info.template)
    names, texts = lib.class_names, _texts(lib)
    out = {"bare:": _scorer(store, lib, encoder, texts)}
    perm = swap_permutation(len(names), seed)
    out["swap:"] = _scorer(
        store, lib, encoder, [[template.build(names[c], d) for d in texts[perm[c]]] for c in range(len(names))]
    )
    for j in range(WORD_DRAWS):
        descs = random_word_descriptors(lib, j, seed)
        out[f"words{j}:"] = _scorer(
            store, lib, encoder, [[template.build(names[c], d) for d in ds] for c, ds in enumerate(descs)]
        )
    return out
