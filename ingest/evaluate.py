"""``whyclip eval``: score a labelled image set with a library, every way at once, and store
the run (store.runs) for audits.

A dataset is a folder with one subfolder of images per class (the ImageFolder layout) or a
CSV of ``path,label`` rows (paths relative to the CSV's folder). Labels are matched to the
library's classes exactly, then ignoring case, underscores and repeated spaces. Images are
cached by the sha256 of their file, so a rerun or a second library embeds nothing again.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store import Library, Store, build_class_matrices, cache, score_classes
from store.errors import InputError, WhyclipError
from store.runs import (BASELINE, CONTROL, MethodResults, RunData, RunInfo, check_new_name, rank_results, save_run,
                        unused_name)
from store.scoring import AGGREGATES

from .images import IMAGE_SUFFIXES, read_image_bytes
from .prompts import Template

log = logging.getLogger(__name__)
BATCH = 32  # images read, encoded and cached at a time
SCORE_BLOCK = 256  # images scored at a time (bounds the (images x classes) matrices)
MAX_LISTED = 10
CONTROL_SEED = 0


@dataclass
class Dataset:
    source: str
    items: list[tuple[Path, str]]  # (image file, label as written)


@dataclass
class EvalReport:
    run: RunInfo
    data: RunData | None = None  # the stored run, as audits read it back
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    unmatched: dict[str, int] = field(default_factory=dict)  # label -> images skipped
    n_embedded: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # images, control, scoring (s)

    @property
    def images_per_second(self) -> float:
        """Images read, embedded (or found in the cache) per second of image work."""
        t = self.timings.get("images", 0.0)
        return self.run.n_images / t if t else 0.0


def read_dataset(path: str | Path) -> Dataset:
    """A dataset folder (ImageFolder) or CSV, or :class:`InputError` naming what is wrong."""
    p = Path(path).expanduser()
    layout = "a folder with one subfolder of images per class, or a CSV of path,label rows"
    if not p.exists():
        raise InputError(f"{p}: no such dataset: give {layout}")
    if p.is_dir():
        classes = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise InputError(f"{p}: no class subfolders: a dataset is {layout}")
        items = [(f, d.name) for d in classes for f in sorted(d.rglob("*"))
                 if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
        if not items:
            raise InputError(f"{p}: its class subfolders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(str(p), items)
    if p.suffix.lower() != ".csv":
        raise InputError(f"{p}: not a folder or a .csv file: a dataset is {layout}")
    items = []
    with open(p, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or all(not x.strip() for x in row):
                continue
            if line == 1 and [x.strip().lower() for x in row] == ["path", "label"]:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise InputError(f"{p}, line {line}: expected two fields, path,label; got {row!r}")
            items.append(((p.parent / row[0].strip()).resolve(), row[1].strip()))
    if not items:
        raise InputError(f"{p}: no path,label rows")
    return Dataset(str(p), items)


def normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def match_labels(labels: list[str], class_names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Label -> class position (exact first, then by :func:`normalise`), and the labels
    that match no class (or several)."""
    exact = {n: i for i, n in enumerate(class_names)}
    loose: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        loose.setdefault(normalise(n), []).append(i)
    found, unmatched = {}, []
    for label in dict.fromkeys(labels):
        if label in exact:
            found[label] = exact[label]
        elif len(loose.get(normalise(label), [])) == 1:
            found[label] = loose[normalise(label)][0]
        else:
            unmatched.append(label)
    return found, unmatched


def unmatched_error(unmatched: list[str], counts: dict[str, int], class_names: list[str], library: str) -> InputError:
    listed = []
    for label in unmatched[:MAX_LISTED]:
        close = difflib.get_close_matches(label, class_names, n=1)
        listed.append(f"{label!r} ({counts[label]} images{f', closest class {close[0]!r}' if close else ''})")
    more = f" and {len(unmatched) - MAX_LISTED} more" if len(unmatched) > MAX_LISTED else ""
    return InputError(f"{len(unmatched)} label(s) match no class of library {library!r}: {'; '.join(listed)}{more}; "
                      "rename them to the library's class names, or pass --skip-unmatched to leave their images out")  # fmt: skip


def control_descriptors(lib: Library, seed: int = CONTROL_SEED) -> list[list[str]]:
    """WaffleCLIP-style control: for every class as many descriptors as it has, each made of
    as many random words as the one it replaces, drawn from all words of the library's
    descriptors (so the vocabulary, and nothing class-specific, is kept)."""
    texts = [[t for t, _ in lib._class_texts(c)] for c in range(len(lib.class_names))]
    words = sorted({w for ts in texts for t in ts for w in t.split()})
    if not words:
        return [[] for _ in texts]
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(words, size=max(1, len(t.split())))) for t in ts] for ts in texts]


def _embed_texts(store: Store, encoder, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and norms of ``prompts``, through the embedding cache."""
    distinct = list(dict.fromkeys(prompts))
    found = cache.lookup(store, encoder.cache_key, distinct)
    missing = [p for p in distinct if p not in found]
    if missing:
        vectors, norms = encoder.embed_texts(missing)
        cache.save(store, encoder.cache_key, missing, vectors, norms)
        found.update({t: (v, float(n)) for t, v, n in zip(missing, vectors, norms)})
    dim = encoder.info.dim
    vecs = np.array([found[p][0] for p in prompts], dtype=np.float32).reshape(len(prompts), dim)
    return vecs, np.array([found[p][1] for p in prompts], dtype=np.float32)


def control_scorer(store: Store, lib: Library, encoder, seed: int = CONTROL_SEED):
    """The random-word control library's class matrices, and the descriptor texts."""
    descs = control_descriptors(lib, seed)
    template = Template(lib.info.template)
    prompts = [template.build(lib.class_names[c], d) for c, ds in enumerate(descs) for d in ds]
    vectors, norms = _embed_texts(store, encoder, prompts)
    offsets = np.concatenate([[0], np.cumsum([len(ds) for ds in descs])])
    return build_class_matrices(vectors, norms, offsets, np.asarray(lib.matrices.baseline)), vectors


def embed_dataset(
    store: Store, encoder, files: list[Path], progress: Callable[[int, int], None] | None = None
) -> tuple[list[int], list[str], np.ndarray, list[str], int]:
    """Unit vectors of the readable files, through the image cache (by file sha256).

    Returns the kept indices into ``files``, their hashes, their vectors, "path: reason"
    for each unreadable file (reported and skipped), and how many were embedded now."""
    key = f"{encoder.cache_key}/image"
    kept, shas, vectors, skipped, embedded = [], [], [], [], 0
    for start in range(0, len(files), BATCH):
        batch = list(range(start, min(start + BATCH, len(files))))
        data: dict[int, bytes] = {}
        for i in batch:
            try:
                data[i] = files[i].read_bytes()
            except OSError as exc:
                skipped.append(f"{files[i]}: cannot be read ({exc.strerror or exc})")
        hashes = {i: hashlib.sha256(b).hexdigest() for i, b in data.items()}
        found = cache.lookup_hashes(store, key, list(hashes.values()))
        pictures, todo = [], []
        for i in data:
            if hashes[i] in found:
                continue
            try:
                pictures.append(read_image_bytes(str(files[i]), data[i]))
                todo.append(i)
            except WhyclipError as exc:
                skipped.append(str(exc))
        if pictures:
            vecs, norms = encoder.embed_images(pictures)
            cache.save_hashes(store, key, [hashes[i] for i in todo], vecs, norms)
            found.update({hashes[i]: (v, float(n)) for i, v, n in zip(todo, vecs, norms)})
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


@dataclass
class EvalPlan:
    """A validated evaluation, ready to embed (the eval counterpart of ``IngestPlan``)."""

    dataset: Dataset
    items: list[tuple[Path, int]]  # (image file, class position) of the matched labels
    unmatched: dict[str, int]  # label -> images left out
    name: str


def plan_eval(store: Store, lib: Library, dataset: Dataset, *, name: str | None = None,
              skip_unmatched: bool = False) -> EvalPlan:  # fmt: skip
    """Match labels and choose the run name; raises :class:`InputError` before any work
    (and before a model loads)."""
    counts: dict[str, int] = {}
    for _, label in dataset.items:
        counts[label] = counts.get(label, 0) + 1
    mapping, unmatched = match_labels(list(counts), lib.class_names)
    if unmatched and not skip_unmatched:
        raise unmatched_error(unmatched, counts, lib.class_names, lib.info.name)
    if not mapping:
        raise InputError(f"no label of {dataset.source} matches a class of library {lib.info.name!r}")
    if name is not None:
        check_new_name(store, lib.info.name, name)
    items = [(p, mapping[label]) for p, label in dataset.items if label in mapping]
    return EvalPlan(dataset, items, {u: counts[u] for u in unmatched},
                    name or unused_name(store, lib.info.name, Path(dataset.source).stem or "run"))  # fmt: skip


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
) -> EvalReport:
    """Embed the dataset's images, score them every way and store the run."""
    started = time.perf_counter()
    lib.check_encoder(encoder.info.id)
    plan = dataset if isinstance(dataset, EvalPlan) else plan_eval(store, lib, dataset, name=name,
                                                                      skip_unmatched=skip_unmatched)  # fmt: skip
    dataset, items = plan.dataset, plan.items
    timings = {}
    t = time.perf_counter()
    kept, shas, vectors, skipped, embedded = embed_dataset(store, encoder, [p for p, _ in items], progress)
    timings["images"] = time.perf_counter() - t
    if not kept:
        raise InputError(f"none of the {len(items)} images of {dataset.source} could be read: nothing to evaluate")
    y = np.array([items[i][1] for i in kept], dtype=np.int64)
    t = time.perf_counter()
    control, control_vectors = control_scorer(store, lib, encoder, control_seed)  # cached after the first run
    timings["control"] = time.perf_counter() - t
    t = time.perf_counter()
    results = _score_all(lib, control, control_vectors, vectors, y)
    paths = [str(items[i][0]) for i in kept]
    run = save_run(
        store, library_id=lib.info.id, library_name=lib.info.name,
        name=plan.name,
        dataset=dataset.source, encoder_key=encoder.cache_key, paths=paths, shas=shas,
        labels=y, vectors=vectors, results=results,
        details={"skipped": skipped, "unmatched": plan.unmatched, "control_seed": control_seed,
                 "library_version": lib.info.version},
    )  # fmt: skip
    timings["scoring"] = time.perf_counter() - t
    data = RunData(run, paths, y, vectors, results)
    return EvalReport(run, data, skipped, plan.unmatched, embedded, len(kept) - embedded,
                      time.perf_counter() - started, timings)  # fmt: skip


def _score_all(lib: Library, control, control_vectors: np.ndarray, vectors: np.ndarray, y: np.ndarray) -> dict:
    """Every method's ranked results, scoring ``SCORE_BLOCK`` images at a time."""
    parts: dict[str, list] = {}
    for start in range(0, len(vectors), SCORE_BLOCK):
        x, yb = vectors[start : start + SCORE_BLOCK], y[start : start + SCORE_BLOCK]
        scored = {a: lib.scores(x, a) for a in AGGREGATES}
        scored[BASELINE] = x @ np.asarray(lib.matrices.baseline).T
        for a in AGGREGATES:
            scored[CONTROL + a] = score_classes(x, control, a, control_vectors)
        for method, s in scored.items():
            parts.setdefault(method, []).append(rank_results(s, yb))
    return {m: MethodResults(*(np.concatenate([getattr(p, f) for p in ps]) for f in ("top", "top_scores", "true_score", "true_rank")))
            for m, ps in parts.items()}  # fmt: skip
