"""Querying a loaded library version: exact class scores, evidence, contrasts,
library-wide retrieval, and the explanations built from them."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from whyclip.store.analysis.name_split import image_split
from whyclip.store.db import embedding_cache
from whyclip.store.db.pair_descriptors import StoredPair, load_pairs
from whyclip.store.db.schema import ClassRow, DescriptorRow, SharedTextRow
from whyclip.store.errors import EncoderMismatch, InputError, LibraryNotFound, StoreError
from whyclip.store.method import (
    AGGREGATES,
    ClassMatrices,
    build_class_matrices,
    calibrated_softmax,
    descriptor_weights,
    score_classes,
    softmax,
    top_k,
)
from whyclip.store.method.explanation import (
    BaselineScore,
    ClassScore,
    Contrast,
    ContrastRow,
    DescriptorScore,
    Explanation,
    PairDescriptors,
    PairFeatureScore,
    Retrieved,
)
from whyclip.store.names import loose_matches
from whyclip.store.records import LibraryInfo
from whyclip.store.vectors.files import IndexFiles

if TYPE_CHECKING:
    from whyclip.store.db.calibrations import CalibrationInfo

SPLIT_MAX = 200_000  # descriptors: above, explain does not read every bare vector for the split
BARE_NOTE = (
    "name vs description not shown: this library's bare-descriptor prompts are not in the embedding cache "
    "for this model; run 'whyclip eval DATASET --library {name}' once (it embeds them), then explain again"
)

_HIT_ROWS = (
    select(DescriptorRow.id, ClassRow.name, DescriptorRow.text, DescriptorRow.prompt)
    .join(ClassRow, ClassRow.id == DescriptorRow.class_id)
    .where(DescriptorRow.id.in_(bindparam("ids", expanding=True)))
)


class Library:
    """A loaded library version: exact scoring and explanations for image vectors. It needs
    the database (for class and descriptor rows) and the version's vector files, nothing
    else: :meth:`whyclip.store.catalogue.Store.load` opens one."""

    def __init__(self, engine: Engine, info: LibraryInfo, files: IndexFiles):
        self.engine = engine
        self.info = info
        self.files = files
        self.vectors = self.files.vectors
        if self.files.descriptor_ids is None and info.first_descriptor_id is None:
            raise StoreError(f"library {info.name!r} has index files but no descriptor keys: re-ingest it")
        with Session(engine) as s:
            rows = s.execute(
                select(ClassRow.id, ClassRow.name, ClassRow.baseline_prompt)
                .where(ClassRow.library_id == info.id)
                .order_by(ClassRow.position)
            ).all()
        self.class_ids = [r[0] for r in rows]
        self.class_names = [r[1] for r in rows]
        self.baseline_prompts = [r[2] for r in rows]
        self._position = {n: i for i, n in enumerate(self.class_names)}

    @property
    def matrices(self) -> ClassMatrices:
        return self.files.matrices

    @property
    def ids(self) -> np.ndarray:
        """The database key of each descriptor position (row of ``vectors``)."""
        if self.files.descriptor_ids is not None:
            return self.files.descriptor_ids
        return self._first_id() + np.arange(self.info.n_descriptors, dtype=np.int64)

    def _first_id(self) -> int:
        """The first descriptor key of a version whose keys are contiguous (no stored ids)."""
        first = self.info.first_descriptor_id
        assert first is not None  # __init__ refused a version with neither stored ids nor a first key
        return first

    def _keys(self, lo: int, hi: int) -> ColumnElement[bool]:
        """A condition selecting the descriptors at positions lo..hi-1."""
        if self.files.descriptor_ids is not None:
            return DescriptorRow.id.in_(self.files.descriptor_ids[lo:hi].tolist())
        first = self._first_id()
        return DescriptorRow.id.between(first + lo, first + hi - 1)

    def check_encoder(self, encoder_id: str) -> None:
        if encoder_id != self.info.encoder_id:
            raise EncoderMismatch(
                f"library {self.info.name!r} was built with encoder {self.info.encoder_id!r}, "
                f"not {encoder_id!r}: query it with --model {self.info.encoder_name!r}, "
                "or re-ingest it with this model"
            )

    def use_encoder_id(self, encoder_id: str) -> None:
        """Accept ``encoder_id`` from now on: an old id of this version's encoder was found
        to name the same model (:mod:`whyclip.ingest.encoder.legacy_ids`). In memory only."""
        self.info = dataclasses.replace(self.info, encoder_id=encoder_id)

    def class_position(self, name: str) -> int:
        """The position of class ``name``: exact, else ignoring case, underscores and
        repeated spaces (as ``eval`` matches labels); an ambiguous name names the candidates."""
        if name in self._position:
            return self._position[name]
        found = loose_matches(name, self.class_names)
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(repr(self.class_names[i]) for i in found)
            raise InputError(
                f"class {name!r} is ambiguous in library {self.info.name!r}: it could be {listed}; give the exact name"
            )
        close = difflib.get_close_matches(name, self.class_names, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise InputError(f"library {self.info.name!r} has no class {name!r}{hint}")

    def scores(self, images: np.ndarray, aggregate: str | None = None) -> np.ndarray:
        """Exact scores of every class, shape (B, C)."""
        agg = aggregate or self.info.aggregate
        return score_classes(images, self.matrices, agg, self.vectors)

    @lru_cache(maxsize=4096)  # noqa: B019 - a Library lives as long as its cache should
    def class_texts(self, position: int) -> tuple[tuple[str, str], ...]:
        """(descriptor, prompt) of every descriptor of the class at ``position``, in order."""
        lo, hi = int(self.matrices.offsets[position]), int(self.matrices.offsets[position + 1])
        if hi == lo:
            return ()
        with Session(self.engine) as s:
            rows = s.execute(
                select(DescriptorRow.text, DescriptorRow.prompt).where(self._keys(lo, hi)).order_by(DescriptorRow.id)
            ).all()
        if len(rows) != hi - lo:  # the version was deleted while this reader had it loaded
            raise LibraryNotFound(
                f"library {self.info.name!r} version {self.info.version} was deleted while in use "
                f"(class {self.class_names[position]!r} has {len(rows)} of its {hi - lo} descriptor rows): "
                "load it again"
            )
        return tuple((r[0], r[1]) for r in rows)

    def class_descriptors(self, name: str) -> tuple[list[tuple[str, str]], np.ndarray, bool]:
        """Class ``name``'s (descriptor, prompt) pairs and their unit vectors (n, dim), in
        stored order; for a class without descriptors, its baseline prompt (descriptor "")
        and vector, with ``True`` (a fallback)."""
        position = self.class_position(name)
        lo, hi = int(self.matrices.offsets[position]), int(self.matrices.offsets[position + 1])
        if hi == lo:
            base = np.asarray(self.matrices.baseline[position], dtype=np.float32)[None]
            return [("", self.baseline_prompts[position])], base, True
        return list(self.class_texts(position)), np.asarray(self.vectors[lo:hi], dtype=np.float32), False

    def shared_texts(self, min_classes: int = 2) -> list[dict[str, Any]]:
        """Descriptor texts that ``min_classes`` or more classes share, most shared first,
        with how many classes and a few of them (kept at ingest)."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(SharedTextRow.text, SharedTextRow.classes, SharedTextRow.examples)
                .where(SharedTextRow.library_id == self.info.id, SharedTextRow.classes >= min_classes)
                .order_by(SharedTextRow.classes.desc(), SharedTextRow.text)
            ).all()
        return [{"text": t, "classes": n, "examples": ex} for t, n, ex in rows]

    def truncated_flags(self) -> list[bool]:
        """Whether each descriptor's prompt was cut at CLIP's token limit when embedded, in
        position order (one query)."""
        if int(self.matrices.offsets[-1]) == 0:
            return []
        with Session(self.engine) as s:
            rows = s.execute(
                select(DescriptorRow.id, DescriptorRow.truncated).where(DescriptorRow.library_id == self.info.id)
            ).all()
        flags = dict(rows)
        return [bool(flags.get(int(k), False)) for k in self.ids]

    def descriptor_texts(self) -> list[str]:
        """Every descriptor text of the version, in position order, in one query."""
        n = int(self.matrices.offsets[-1])
        if n == 0:
            return []
        with Session(self.engine) as s:
            texts = s.scalars(select(DescriptorRow.text).where(self._keys(0, n)).order_by(DescriptorRow.id)).all()
        if len(texts) != n:
            raise LibraryNotFound(
                f"library {self.info.name!r} version {self.info.version} was deleted while in use: load it again"
            )
        return list(texts)

    def bare_scorer(self, encoder_key: str) -> tuple[ClassMatrices, np.ndarray] | str:
        """``(ClassMatrices, vectors)`` of the version's descriptors without the class name (the
        ``bare:`` control ``whyclip eval`` embeds and caches), read from the embedding cache
        only (nothing is embedded or written), for the name/description split of
        :meth:`explain`; or a one-line note saying why there is none."""
        if len(self.class_names) < 3:
            return "name vs description not shown: the split is fitted over an image's classes and needs at least 3"
        if self.info.n_descriptors > SPLIT_MAX:
            return (
                f"name vs description not shown: {self.info.n_descriptors:,} descriptors is over {SPLIT_MAX:,} (it "
                "reads every bare-descriptor vector from the cache); the audit has the run's split per class"
            )
        texts = self.descriptor_texts()
        found = embedding_cache.lookup(self.engine, encoder_key, list(dict.fromkeys(texts)))
        if any(t not in found for t in texts):
            return BARE_NOTE.format(name=self.info.name)
        vectors = np.array([found[t][0] for t in texts], dtype=np.float32).reshape(len(texts), self.info.dim)
        norms = np.array([found[t][1] for t in texts], dtype=np.float32)
        return build_class_matrices(vectors, norms, self.matrices.offsets, np.asarray(self.matrices.baseline)), vectors

    def _evidence(self, image: np.ndarray, position: int, aggregate: str) -> list[DescriptorScore]:
        """Every descriptor of a class with its similarity and weight, best first (the
        contrast needs them all; :meth:`explain` lists at most ``max_descriptors``)."""
        lo, hi = self.matrices.offsets[position], self.matrices.offsets[position + 1]
        scale = self.info.logit_scale
        if hi == lo:
            s = float(self.matrices.baseline[position] @ image)
            return [DescriptorScore("", self.baseline_prompts[position], s, s * scale, 1.0, fallback=True)]
        unit = self.vectors[lo:hi]
        sims = unit @ image
        weights = descriptor_weights(aggregate, sims, unit, self.files.norms[lo:hi])
        texts = self.class_texts(position)
        out = [
            DescriptorScore(t, p, float(sim), float(sim) * scale, float(w))
            for (t, p), sim, w in zip(texts, sims, weights, strict=True)
        ]
        return sorted(out, key=lambda d: -d.similarity)

    def contrast(
        self, image: np.ndarray, a: int, b: int, aggregate: str, scores: np.ndarray | Mapping[int, float]
    ) -> Contrast:
        """Split ``score(a) - score(b)`` into per-descriptor contributions that add up exactly.

        With ``score = sum w_d s_d`` and ``mu`` the mean of the two scores, a descriptor of
        class a contributes ``w_d (s_d - mu / W_a)`` (``W_a = sum w``), one of b the negative
        of the same; a descriptor text both classes have gets one row with both parts.
        """
        mu = (float(scores[a]) + float(scores[b])) / 2
        rows: dict[str, dict[str, Any]] = {}
        for side, pos, sign in (("a", a, 1.0), ("b", b, -1.0)):
            ev = self._evidence(image, pos, aggregate)
            total = sum(d.weight for d in ev) or 1.0
            for d in ev:
                key = d.descriptor if not d.fallback else d.prompt
                row = rows.setdefault(key, {"a": None, "b": None, "contribution": 0.0})
                row[side] = d.similarity
                row["contribution"] += sign * d.weight * (d.similarity - mu / total)
        na, nb = self.class_names[a], self.class_names[b]
        out = [
            ContrastRow(
                text,
                r["a"],
                r["b"],
                r["contribution"],
                na if r["contribution"] > 1e-12 else nb if r["contribution"] < -1e-12 else "-",
                "both" if r["a"] is not None and r["b"] is not None else na if r["a"] is not None else nb,
            )
            for text, r in rows.items()
        ]
        out.sort(key=lambda r: -r.contribution)
        return Contrast(na, nb, float(scores[a]), float(scores[b]), out)

    def stored_pairs(self, only: set[tuple[int, int]] | None = None) -> list[StoredPair]:
        """The version's contrastive pair descriptors (FuDD; read when asked, never part of
        a class's own descriptors), all or ``only`` those (low, high) position pairs."""
        return load_pairs(self.engine, self.info.id, self.info.dim, only)

    def pair_evidence(self, image: np.ndarray, a: int, b: int, pair: StoredPair) -> PairDescriptors:
        """The image's similarity to each side of each feature of the stored pair (a, b)."""
        sims = pair.vectors @ np.asarray(image, dtype=np.float32) if len(pair.vectors) else np.zeros(0)
        na, nb = self.class_names[a], self.class_names[b]
        features = []
        for k in dict.fromkeys(d.feature for d in pair.descriptions):
            rows = {d.class_position: i for i, d in enumerate(pair.descriptions) if d.feature == k}
            if a not in rows or b not in rows:
                continue
            da, db = pair.descriptions[rows[a]], pair.descriptions[rows[b]]
            sa, sb = float(sims[rows[a]]), float(sims[rows[b]])
            features.append(
                PairFeatureScore(
                    da.attribute or db.attribute,
                    da.text,
                    db.text,
                    da.prompt,
                    db.prompt,
                    sa,
                    sb,
                    na if sa > sb else nb if sb > sa else "-",
                )
            )
        mean_a = float(np.mean([f.similarity_a for f in features])) if features else 0.0
        mean_b = float(np.mean([f.similarity_b for f in features])) if features else 0.0
        favours = na if mean_a > mean_b else nb if mean_b > mean_a else "-"
        return PairDescriptors(na, nb, features, mean_a, mean_b, favours, pair.provenance())

    @property
    def retrieval(self) -> dict[str, Any]:
        """How :meth:`retrieve` answers (see :attr:`LibraryInfo.retrieval`)."""
        out = self.info.retrieval
        if self.files.searcher.exact and not out["exact"]:
            out.update(exact=True, recall_at_10=1.0)
        return out

    def retrieve(self, images: np.ndarray, k: int = 10) -> list[list[Retrieved]]:
        """The ``k`` best-matching descriptors in the whole library, per image (FAISS)."""
        k = min(k, self.info.n_descriptors)
        if k <= 0:
            return [[] for _ in range(len(images))]
        try:
            sims, positions = self.files.searcher.search(
                np.ascontiguousarray(np.atleast_2d(images), dtype=np.float32), k
            )
        except LibraryNotFound:  # an index read on first search, gone with its deleted version
            raise LibraryNotFound(
                f"library {self.info.name!r} version {self.info.version} was deleted while in use "
                "(its retrieval index is gone): load it again"
            ) from None
        if self.files.descriptor_ids is not None:
            keys = self.files.descriptor_ids[np.maximum(positions, 0)]
        else:
            keys = self.info.first_descriptor_id + positions
        ids = np.where(positions >= 0, keys, -1)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        with self.engine.connect() as c:  # one prepared statement: built per call through a Session it took 2 ms
            meta = {r[0]: r[1:] for r in c.execute(_HIT_ROWS, {"ids": wanted})}
        if len(meta) != len(wanted):  # the version was deleted while this reader had it loaded
            raise LibraryNotFound(
                f"library {self.info.name!r} version {self.info.version} was deleted while in use "
                f"({len(wanted) - len(meta)} of the {len(wanted)} descriptors found have no rows): load it again"
            )
        return [
            [Retrieved(*meta[int(i)], float(sim), int(i)) for sim, i in zip(srow, irow, strict=True) if i >= 0]
            for srow, irow in zip(sims, ids, strict=True)
        ]

    def explain(
        self,
        images: np.ndarray,
        names: list[str] | None = None,
        *,
        aggregate: str | None = None,
        top: int = 5,
        compare: tuple[str, str] | None = None,
        retrieve: int = 10,
        calibration: CalibrationInfo | None = None,
        name_split: tuple[ClassMatrices, np.ndarray] | str | None = None,
        max_descriptors: int | None = None,
    ) -> list[Explanation]:
        """Explain each unit image vector (rows of ``images``): exact scores for every class,
        the evidence of the ``top`` classes, a contrast, the baseline and library-wide hits.

        ``calibration``: a stored calibration (:class:`whyclip.store.db.calibrations.CalibrationInfo`)
        whose temperature and biases give the probabilities. ``name_split``: the bare-descriptor
        ``(ClassMatrices, vectors)`` (:meth:`bare_scorer`) for the
        name/description share of each shown class, or a one-line note saying why there is none.
        ``max_descriptors``: the most descriptors listed per shown class (best first; the
        rest are counted in ``descriptors_not_listed``), so an answer's size has a bound."""
        agg = aggregate or self.info.aggregate
        if agg not in AGGREGATES:
            raise InputError(f"unknown aggregate {agg!r}: choose one of {', '.join(AGGREGATES)}")
        if calibration is not None and calibration.aggregate != agg:
            raise InputError(
                f"the calibration of library {self.info.name!r} is for the {calibration.aggregate} aggregate, "
                f"not {agg}: explain with --aggregate {calibration.aggregate}, or calibrate for {agg}"
            )
        if (
            calibration is not None
            and calibration.biases is not None
            and len(calibration.biases) != len(self.class_names)
        ):
            raise InputError(
                f"the calibration has {len(calibration.biases)} class biases, library {self.info.name!r} "
                f"v{self.info.version} has {len(self.class_names)} classes: run 'whyclip calibrate' again"
            )
        images = np.atleast_2d(np.asarray(images, dtype=np.float32))
        if images.shape[1] != self.info.dim:
            raise EncoderMismatch(
                f"image vectors have dimension {images.shape[1]}, library {self.info.name!r} has {self.info.dim}"
            )
        pair = (self.class_position(compare[0]), self.class_position(compare[1])) if compare else None
        names = names or [f"image {i}" for i in range(len(images))]
        scale = self.info.logit_scale
        scores = self.scores(images, agg)
        base_scores = images @ self.matrices.baseline.T
        bare = None
        if name_split is not None and not isinstance(name_split, str):
            bare = score_classes(images, name_split[0], agg, name_split[1])
        hits = self.retrieve(images, retrieve)
        top = max(1, min(top, len(self.class_names)))
        keys = scores  # biases can change the ranking: then the calibrated logits order the classes
        if calibration is not None and calibration.biases is not None:
            keys = scores.astype(np.float64) * (scale / calibration.temperature) + calibration.biases
        rankings = [top_k(keys[i], max(top, 2)) for i in range(len(images))]
        contrasted = {tuple(sorted(pair)) if pair else tuple(sorted(int(c) for c in r[:2])) for r in rankings}
        stored = {
            (p.class_a, p.class_b): p
            for p in self.stored_pairs({ab for ab in contrasted if len(ab) == 2 and ab[0] != ab[1]})
        }
        out = []
        for i, image in enumerate(images):
            raw = softmax(scores[i], scale)
            probs = (
                raw
                if calibration is None
                else calibrated_softmax(scores[i], scale, calibration.temperature, calibration.biases)
            )
            bprobs = softmax(base_scores[i], scale)
            ranking = rankings[i]
            order = ranking[:top]
            split = None if bare is None else image_split(scores[i], base_scores[i], bare[i])
            evidence = [self._evidence(image, int(c), agg) for c in order]
            classes = [
                ClassScore(
                    self.class_names[c],
                    float(scores[i, c]),
                    float(probs[c]),
                    rank + 1,
                    ev[:max_descriptors],
                    float(base_scores[i, c]),
                    float(bprobs[c]),
                    None if calibration is None else float(raw[c]),
                    None if split is None else float(split["name_share"][c]),
                    None if split is None else float(split["description_share"][c]),
                    len(ev) - len(ev[:max_descriptors]),
                )
                for rank, (c, ev) in enumerate(zip(order, evidence, strict=True))
            ]
            nd: dict[str, Any] | None
            if split is not None:
                nd = {"coefficients": {"name": split["a"], "description": split["b"]}, "explained": split["explained"]}
            else:
                nd = {"note": name_split} if isinstance(name_split, str) else None
            border = top_k(base_scores[i], top)
            baseline = [BaselineScore(self.class_names[c], float(base_scores[i, c]), float(bprobs[c])) for c in border]
            a, b = pair if pair else (int(ranking[0]), int(ranking[1]) if len(ranking) > 1 else None)
            contrast = None
            if b is not None:
                contrast = self.contrast(image, a, b, agg, scores[i])
                found = stored.get((min(a, b), max(a, b)))
                if found is not None and a != b:
                    contrast = dataclasses.replace(contrast, pair_descriptors=self.pair_evidence(image, a, b, found))
            out.append(
                Explanation(
                    names[i],
                    self.info.name,
                    self.info.version,
                    self.info.encoder_name,
                    agg,
                    scale,
                    len(self.class_names),
                    classes,
                    baseline,
                    contrast,
                    hits[i],
                    None if calibration is None else calibration.block(),
                    nd,
                    self.retrieval,
                )
            )
        return out
