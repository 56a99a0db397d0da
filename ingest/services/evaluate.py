"""``whyclip eval``: score a labelled image set with a library, every way at once, and store
the run (:mod:`whyclip.store.analysis`) for audits.

Datasets are read and matched by :mod:`whyclip.ingest.datasets`, images embedded through the cache by
:mod:`whyclip.ingest.embedding`, the control library built by :mod:`.control_libraries`; this module plans the
run, scores it every way and hands it to the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whyclip.ingest.datasets import Dataset, match_labels, unmatched_error
from whyclip.ingest.embedding import embed_image_files_cached
from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.ingest.services.control_libraries import (
    CONTROL_SEED,
    WORD_DRAWS,
    control_scorer,
    extra_control_scorers,
    swap_permutation,
)
from whyclip.ingest.services.fudd import rerank_results
from whyclip.ingest.vocabulary import SOURCE as VOCABULARY
from whyclip.store import (
    AGGREGATES,
    BASELINE,
    CONTROL,
    FUDD,
    TOP,
    InputError,
    Library,
    MethodResults,
    RunData,
    RunInfo,
    SplitAccumulator,
    Store,
    StoredPair,
    check_new_name,
    load_pairs,
    rank_results,
    save_run,
    score_classes,
    stored_pair_texts,
    unused_name,
)

log = logging.getLogger(__name__)
SCORE_BLOCK = 256  # images scored at a time (bounds the (images x classes) matrices)


@dataclass
class EvalReport:
    run: RunInfo
    data: RunData  # the stored run, as audits read it back
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    unmatched: dict[str, int] = field(default_factory=dict)  # label -> images skipped
    n_embedded: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    # seconds per stage (model_load, images, control, scoring, recalibrate); they add up to ``seconds``
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Images read, embedded (or found in the cache) per second of image work."""
        t = self.timings.get("images", 0.0)
        return self.run.n_images / t if t else 0.0


class Stages:
    """Wall time per stage of a run, with the encoder's loading taken out of whichever stage
    it happened in and counted as ``model_load``: the towers load when first used, so the
    first text embedded (the random-word control's) would otherwise carry the text tower's
    load, and a rerun with every vector cached would seem to have lost it. An encoder says
    how long it has spent loading in ``load_seconds`` (none: it never loads)."""

    def __init__(self, encoder, loaded_in: float = 0.0):
        self.encoder = encoder
        self.timings: dict[str, float] = {"model_load": loaded_in}

    def _loaded(self) -> float:
        return float(getattr(self.encoder, "load_seconds", 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        loaded, started = self._loaded(), time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - started
            loading = min(wall, max(0.0, self._loaded() - loaded))
            self.timings["model_load"] += loading
            self.timings[name] = self.timings.get(name, 0.0) + wall - loading


@dataclass
class EvalPlan:
    """A validated evaluation, ready to embed (the eval counterpart of ``IngestPlan``)."""

    dataset: Dataset
    items: list[tuple[Path, int]]  # (image file, class position) of the matched labels
    unmatched: dict[str, int]  # label -> images left out
    name: str
    pairs: list[StoredPair] = field(default_factory=list)  # the version's pair descriptors: FuDD re-ranks with them
    fudd_top_k: int = TOP


def plan_eval(
    store: Store,
    lib: Library,
    dataset: Dataset,
    *,
    name: str | None = None,
    skip_unmatched: bool = False,
    fudd: bool | None = None,
    fudd_top_k: int = TOP,
) -> EvalPlan:
    """Match labels and choose the run name; raises :class:`InputError` before any work
    (and before a model loads). ``fudd``: True requires the version's pair descriptors
    (FuDD), None uses them when there are some, False leaves FuDD out."""
    if not 2 <= fudd_top_k <= TOP:
        raise InputError(
            f"FuDD re-ranks between 2 and {TOP} top classes per image (a run keeps {TOP}): got {fudd_top_k}"
        )
    pairs = load_pairs(store.engine, lib.info.id, lib.info.dim) if fudd is not False else []
    if fudd and not pairs:
        raise InputError(
            f"library {lib.info.name!r} v{lib.info.version} has no pair descriptors for --method fudd: store some "
            f"with 'whyclip generate-pairs --library {lib.info.name} --store ...' or 'whyclip ingest-pairs PAIRS "
            f"--library {lib.info.name}'"
        )
    counts: dict[str, int] = {}
    for _, label in dataset.items:
        counts[label] = counts.get(label, 0) + 1
    mapping, unmatched = match_labels(list(counts), lib.class_names)
    if unmatched and not skip_unmatched:
        raise unmatched_error(unmatched, counts, lib.class_names, lib.info.name)
    if not mapping:
        raise InputError(f"no label of {dataset.source} matches a class of library {lib.info.name!r}")
    name = name if name is not None else unused_name(store.engine, lib.info.name, Path(dataset.source).stem or "run")
    check_new_name(store.engine, lib.info.name, name)
    items = [(p, mapping[label]) for p, label in dataset.items if label in mapping]
    return EvalPlan(
        dataset,
        items,
        {u: counts[u] for u in unmatched},
        name,
        pairs,
        fudd_top_k,
    )


def run_eval(
    store: Store,
    lib: Library,
    dataset: Dataset | EvalPlan,
    encoder,
    *,
    name: str | None = None,
    skip_unmatched: bool = False,
    progress: Callable[[int, int], None] | None = None,
    control_seed: int = CONTROL_SEED,
    loaded_in: float = 0.0,
) -> EvalReport:
    """Embed the dataset's images, score them every way and store the run. ``loaded_in``:
    the seconds the caller spent loading ``encoder`` for this run, reported as part of the
    ``model_load`` stage and of the total."""
    started = time.perf_counter()
    stages = Stages(encoder, loaded_in)
    with stages.stage("plan"):
        check_library_encoder(lib, encoder, store)  # an old id of this encoder is renamed
        plan = (
            dataset
            if isinstance(dataset, EvalPlan)
            else plan_eval(store, lib, dataset, name=name, skip_unmatched=skip_unmatched)
        )
    dataset, items = plan.dataset, plan.items
    with stages.stage("images"):
        kept, shas, vectors, skipped, embedded = embed_image_files_cached(
            store, encoder, [p for p, _ in items], progress
        )
    if not kept:
        raise InputError(f"none of the {len(items)} images of {dataset.source} could be read: nothing to evaluate")
    y = np.array([items[i][1] for i in kept], dtype=np.int64)
    with stages.stage("control"):
        controls = {CONTROL: control_scorer(store, lib, encoder, control_seed)}  # embedded once, then cached
        controls.update(extra_control_scorers(store, lib, encoder, control_seed))
    with stages.stage("scoring"):
        results, splits = _score_all(lib, controls, vectors, y)
        details_fudd = {}
        if plan.pairs:
            results[FUDD] = rerank_results(
                results[lib.info.aggregate], vectors, y, stored_pair_texts(plan.pairs), plan.fudd_top_k
            )
            details_fudd = {
                "fudd": {
                    "base": lib.info.aggregate,
                    "top_k": plan.fudd_top_k,
                    "pairs": len(plan.pairs),
                    "descriptions": sum(len(p.descriptions) for p in plan.pairs),
                    "content_sha256": [p.content_sha256 for p in plan.pairs],
                }
            }
        paths = [str(items[i][0]) for i in kept]
        run = save_run(
            store.engine,
            library_id=lib.info.id,
            library_name=lib.info.name,
            name=plan.name,
            dataset=dataset.source,
            encoder_key=encoder.cache_key,
            paths=paths,
            shas=shas,
            labels=y,
            vectors=vectors,
            results=results,
            details={
                "skipped": skipped,
                "unmatched": plan.unmatched,
                "control_seed": control_seed,
                "library_version": lib.info.version,
                "controls": {
                    "version": 1,
                    "word_draws": WORD_DRAWS,
                    "vocabulary": VOCABULARY,
                    "swap_permutation": swap_permutation(len(lib.class_names), control_seed).tolist(),
                    "name_description": splits,
                },
                **details_fudd,
            },
        )
    with stages.stage("recalibrate"):  # the key eval --json has always printed
        store.retune_recall(lib.info.name, lib.info.version)  # the library-wide retrieval, on these images
    data = RunData(run, paths, y, vectors, results)
    seconds = loaded_in + time.perf_counter() - started
    return EvalReport(run, data, skipped, plan.unmatched, embedded, len(kept) - embedded, seconds, stages.timings)


def _score_all(lib: Library, controls: dict, vectors: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """Every method's ranked results, scoring ``SCORE_BLOCK`` images at a time, and the
    name/description split of each aggregate (:mod:`whyclip.store.analysis.name_split`)."""
    parts: dict[str, list] = {}
    splits = {a: SplitAccumulator() for a in AGGREGATES}
    for start in range(0, len(vectors), SCORE_BLOCK):
        x, yb = vectors[start : start + SCORE_BLOCK], y[start : start + SCORE_BLOCK]
        scored = {a: lib.scores(x, a) for a in AGGREGATES}
        scored[BASELINE] = x @ np.asarray(lib.matrices.baseline).T
        for prefix, (matrices, control_vectors) in controls.items():
            for a in AGGREGATES:
                scored[prefix + a] = score_classes(x, matrices, a, control_vectors)
        for a in AGGREGATES:
            splits[a].add(scored[a], scored[BASELINE], scored["bare:" + a], yb)
        for method, s in scored.items():
            parts.setdefault(method, []).append(rank_results(s, yb))
    results = {
        m: MethodResults(
            *(np.concatenate([getattr(p, f) for p in ps]) for f in ("top", "top_scores", "true_score", "true_rank"))
        )
        for m, ps in parts.items()
    }
    return results, {a: acc.result() for a, acc in splits.items()}
