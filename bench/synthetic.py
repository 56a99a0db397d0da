"""Synthetic descriptor and image vectors with CLIP's geometry, for retrieval checks and
benchmarks (tests and ``bench/run.py`` share it; nothing a user stores comes from here).

Clustered unit vectors (one tight blob a class, queried by its noisy mean) suit every index
and predict nothing about a real library. CLIP's embeddings differ in four ways, each built
in here:

* **Two cones.** Every text vector is ``alpha_t * c_t + beta_t * u`` with ``u`` a unit
  "meaning" vector orthogonal to the cone axes: text vectors share one narrow cone (mean
  pairwise cosine about 0.55, as measured for CLIP ViT-B/32 text embeddings), image vectors
  another around ``c_i`` (mean pairwise cosine about 0.5).
* **The modality gap** (Liang et al., "Mind the Gap", NeurIPS 2022): the cones' centres are
  apart; they report a distance of 0.82 between the mean image and the mean text embedding
  of CLIP on MSCOCO. Here ``c_t . c_i`` is set so that the distance is about 0.8.
* **Weak matching.** An image's cosine with the descriptors of its own class is about
  0.3-0.4 (CLIP ViT-B/32's matching image-caption cosine is about 0.3), above about 0.2 for
  other classes: the image's meaning is its class's meaning plus much noise, so an image
  query lies far from every text vector and its top ten are decided by small differences.
* **Shared concepts and superclasses.** A descriptor's meaning mixes its superclass, its
  class, and one visual concept drawn from a long-tailed (Zipf) vocabulary, so the same
  concept ("long tail", "striped") recurs in many classes across superclasses.

``clip_shaped(...)`` returns a :class:`ClipShaped` with the unit text vectors in class-major
order, their class offsets, and an ``images(n, seed)`` method; :func:`statistics` measures
the four properties (tests assert they fall in :data:`EXPECTED`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The ranges the generator's statistics are checked against (see the module docstring).
EXPECTED = {
    "text_pairwise_cosine": (0.50, 0.60),
    "image_pairwise_cosine": (0.40, 0.60),
    "modality_gap": (0.70, 0.90),  # distance between the mean image and the mean text vector
    "matching_cosine": (0.28, 0.40),  # an image and the descriptors of its class
    "other_class_cosine": (0.10, 0.26),  # an image and the descriptors of a random other class
}

ALPHA_T = 0.74  # the text cone: cos(text, c_t)
ALPHA_I = 0.68  # the image cone: cos(image, c_i)
AXES_COSINE = 0.37  # c_t . c_i, giving a gap of about 0.8
CHUNK = 1 << 15


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class ClipShaped:
    """Text vectors of ``n_classes`` classes with ``per_class`` descriptors each, and the
    parts needed to draw images of those classes."""

    vectors: np.ndarray  # (n_classes * per_class, dim) unit fp32, class-major
    offsets: np.ndarray  # (n_classes + 1,)
    concepts: np.ndarray  # (n_classes, per_class) concept id of each descriptor
    superclass: np.ndarray  # (n_classes,)
    seed: int
    _axes: tuple  # c_t, c_i, and the projector's basis to remove them
    _parts: tuple  # superclass, class and concept vectors (unit, in the meaning subspace)

    @property
    def n_classes(self) -> int:
        return len(self.offsets) - 1

    def images(self, n: int, seed: int = 1, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` unit image vectors of random classes (or of ``classes``) and their class
        positions: the class's meaning (superclass, class, two or three of its concepts)
        plus as much noise, in the image cone."""
        rng = np.random.default_rng([self.seed, seed, 7])
        picks = rng.integers(0, self.n_classes, n) if classes is None else np.asarray(classes)
        c_t, c_i, basis = self._axes
        supers, own, concept_vecs = self._parts
        dim = len(c_t)
        per = self.concepts.shape[1]
        chosen = np.stack([rng.choice(per, size=min(3, per), replace=False) for _ in picks])
        seen = concept_vecs[self.concepts[picks[:, None], chosen]].mean(axis=1)
        meaning = 0.35 * supers[self.superclass[picks]] + 0.55 * own[picks] + 0.55 * _unit(seen)
        meaning = _unit(meaning) + 1.4 * _unit(_orthogonal(rng.standard_normal((len(picks), dim)), basis))
        out = ALPHA_I * c_i + np.sqrt(1 - ALPHA_I**2) * _unit(meaning)
        return _unit(out), picks

    def text_queries(self, n: int, seed: int = 2, noise: float = 0.5) -> np.ndarray:
        """Text-side queries (what the old calibration used): a class's normalised mean
        descriptor vector nudged by ``noise``."""
        rng = np.random.default_rng([self.seed, seed, 11])
        picks = rng.integers(0, self.n_classes, n)
        means = np.stack([self.vectors[self.offsets[c] : self.offsets[c + 1]].mean(axis=0) for c in picks])
        return _unit(
            _unit(means) + noise * rng.standard_normal(means.shape).astype(np.float32) / np.sqrt(means.shape[1])
        )


def _orthogonal(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``x`` with its components along the (orthonormal) rows of ``basis`` removed."""
    return x - (x @ basis.T) @ basis


def clip_shaped(
    n_classes: int,
    per_class: int = 10,
    dim: int = 512,
    n_superclasses: int | None = None,
    n_concepts: int | None = None,
    seed: int = 0,
    out: np.ndarray | None = None,
) -> ClipShaped:
    """A CLIP-shaped library (see the module docstring). Superclasses default to one per
    20 classes, concepts to ``2 * per_class`` per 10 classes (so each concept recurs in a
    few classes on average, the popular ones in very many). ``out`` may be a preallocated
    (or memory-mapped) array to fill, for a million rows without a second copy."""
    rng = np.random.default_rng(seed)
    n_superclasses = n_superclasses or max(2, n_classes // 20)
    n_concepts = n_concepts or max(per_class * 2, n_classes * per_class // 5)
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    c_t = q[:, 0].astype(np.float32)
    c_i = (AXES_COSINE * q[:, 0] + np.sqrt(1 - AXES_COSINE**2) * q[:, 1]).astype(np.float32)
    basis = q.T.astype(np.float32)

    def parts(n: int) -> np.ndarray:
        return _unit(_orthogonal(rng.standard_normal((n, dim)).astype(np.float32), basis))

    supers, own, concept_vecs = parts(n_superclasses), parts(n_classes), parts(n_concepts)
    superclass = rng.integers(0, n_superclasses, n_classes)
    popularity = 1.0 / np.arange(1, n_concepts + 1) ** 1.05  # Zipf: a long tail of concepts
    concepts = rng.choice(n_concepts, size=(n_classes, per_class), p=popularity / popularity.sum())
    n = n_classes * per_class
    vectors = np.empty((n, dim), dtype=np.float32) if out is None else out
    flat_class = np.repeat(np.arange(n_classes), per_class)
    flat_concept = concepts.ravel()
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        cls = flat_class[lo:hi]
        meaning = (
            0.35 * supers[superclass[cls]]
            + 0.55 * own[cls]
            + 0.6 * concept_vecs[flat_concept[lo:hi]]
            + 0.45 * parts(hi - lo)
        )
        vectors[lo:hi] = _unit(ALPHA_T * c_t + np.sqrt(1 - ALPHA_T**2) * _unit(meaning))
    offsets = np.arange(0, n + 1, per_class, dtype=np.int64)
    return ClipShaped(vectors, offsets, concepts, superclass, seed, (c_t, c_i, basis), (supers, own, concept_vecs))


def statistics(lib: ClipShaped, n: int = 2000, seed: int = 5) -> dict[str, float]:
    """The generator's geometry, measured on a sample: mean pairwise cosines of text and of
    image vectors, the modality gap, and an image's mean cosine with the descriptors of its
    own class and of a random other class."""
    rng = np.random.default_rng(seed)
    texts = np.asarray(lib.vectors[np.sort(rng.choice(len(lib.vectors), size=min(n, len(lib.vectors)), replace=False))])
    images, classes = lib.images(n, seed=seed)

    def pairwise(x: np.ndarray) -> float:
        g = x @ x.T
        return float((g.sum() - np.trace(g)) / (len(x) * (len(x) - 1)))

    per = lib.concepts.shape[1]
    own = np.array(
        [
            float((lib.vectors[lib.offsets[c] : lib.offsets[c] + per] @ v).mean())
            for v, c in zip(images, classes, strict=True)
        ]
    )
    others = (classes + rng.integers(1, lib.n_classes, len(classes))) % lib.n_classes
    other = np.array(
        [
            float((lib.vectors[lib.offsets[c] : lib.offsets[c] + per] @ v).mean())
            for v, c in zip(images, others, strict=True)
        ]
    )
    return {
        "text_pairwise_cosine": pairwise(texts),
        "image_pairwise_cosine": pairwise(images),
        "modality_gap": float(np.linalg.norm(images.mean(axis=0) - texts.mean(axis=0))),
        "matching_cosine": float(own.mean()),
        "other_class_cosine": float(other.mean()),
    }


if __name__ == "__main__":  # python -m bench.synthetic: print the statistics
    lib = clip_shaped(2000, 10)
    for key, value in statistics(lib).items():
        lo, hi = EXPECTED[key]
        print(f"{key:24s} {value:.3f}   expected {lo:.2f}-{hi:.2f}")


def library_draft(lib: ClipShaped, name: str = "synthetic"):
    """A :class:`~whyclip.store.LibraryDraft` of ``lib``'s text vectors (one prompt a
    descriptor, a baseline prompt a class: its class's mean direction), for a store."""
    from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft

    per = lib.concepts.shape[1]
    n_desc, dim = lib.vectors.shape
    base = np.stack(
        [_unit(lib.vectors[lib.offsets[c] : lib.offsets[c + 1]].mean(axis=0)) for c in range(lib.n_classes)]
    )
    classes, rows = [], {}
    for c in range(lib.n_classes):
        prompts = [f"c{c}, which has d{j} (concept {lib.concepts[c, j]})" for j in range(per)]
        rows.update({p: c * per + j for j, p in enumerate(prompts)})
        rows[f"a photo of a c{c}."] = n_desc + c
        classes.append(
            DraftClass(
                f"c{c}",
                f"a photo of a c{c}.",
                [f"d{j} (concept {lib.concepts[c, j]})" for j in range(per)],
                prompts,
                [False] * per,
            )
        )
    enc = EncoderInfo(f"synthetic-{dim}", "synthetic", dim, 100.0)
    vectors = np.concatenate([lib.vectors, base])
    return LibraryDraft(
        name, enc, "paper", "a photo of a {class}.", classes, rows, vectors, np.ones(len(vectors), np.float32)
    )
