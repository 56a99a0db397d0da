"""What stored pair descriptors (FuDD) cost an explanation and an evaluation: explain a
batch of images against a synthetic library with no stored pairs and with many, interleaved,
and FuDD's re-ranking of a run's top classes. Run by hand:

    python bench/pairs_explain.py [--classes 1000] [--descriptors 10] [--pairs 500] [--images 32] [--repeats 7]

Vectors are seeded random unit vectors (the explain path does not care what they mean); the
pairs are the first ``--pairs`` (class i, class i+1) with three features each; every image
is explained with the contrast of class 0 and class 1, which is a stored pair in one library.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from whyclip.ingest.services.fudd import rerank_results
from whyclip.store import DraftClass, EncoderInfo, LibraryDraft, Store, stored_pair_texts
from whyclip.store.analysis.run_records import rank_results
from whyclip.store.db.pair_descriptors import PairDescription, PairDraft, write_pairs


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--descriptors", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dim", type=int, default=512)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    home = Path(tempfile.mkdtemp()) / "home"
    store = Store.open(home)
    enc = EncoderInfo("bench-enc", "bench", a.dim, 100.0)
    classes: list[DraftClass] = []
    rows: dict[str, int] = {}
    for c in range(a.classes):
        texts = [f"descriptor {j} of class {c}" for j in range(a.descriptors)]
        for prompt in [*texts, f"a photo of a class {c}."]:
            rows[prompt] = len(rows)
        classes.append(DraftClass(f"class {c}", f"a photo of a class {c}.", texts, texts, [False] * len(texts)))
    vectors = unit(rng, len(rows), a.dim)
    for name in ("none", "pairs"):
        store.write_library(
            LibraryDraft(
                name, enc, "bare", "a photo of a {class}.", classes, rows, vectors, np.ones(len(rows), np.float32)
            )
        )
    lib_pairs = store.load("pairs")
    drafts = []
    for i in range(min(a.pairs, a.classes - 1)):
        desc = [
            PairDescription(k, pos, "f", f"look {k} of {pos}", f"look {k} of {pos}")
            for k in range(3)
            for pos in (i, i + 1)
        ]
        drafts.append(
            PairDraft(
                i,
                i + 1,
                (f"class {i}", f"class {i + 1}"),
                desc,
                unit(rng, len(desc), a.dim),
                np.ones(len(desc), np.float32),
            )
        )
    write_pairs(store.engine, lib_pairs.info.id, "bench-enc", drafts)
    libs = {"none": store.load("none"), "pairs": store.load("pairs")}
    images = unit(rng, a.images, a.dim)
    times: dict[str, list[float]] = {k: [] for k in libs}
    for _ in range(a.repeats):  # interleaved, so the machine's load hits both alike
        for k, lib in libs.items():
            t = time.perf_counter()
            lib.explain(images, top=5, compare=("class 0", "class 1"), retrieve=10)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"explain {a.images} images, {a.classes} classes x {a.descriptors} descriptors, dim {a.dim}, "
        f"median of {a.repeats}: no pairs {med['none'] * 1000:.1f} ms, {a.pairs} stored pairs "
        f"{med['pairs'] * 1000:.1f} ms (ratio {med['pairs'] / med['none']:.2f})"
    )
    n = 10_000
    run_images = unit(rng, n, a.dim)
    labels = rng.integers(0, a.classes, n)
    base = rank_results(libs["pairs"].scores(run_images), labels)
    t = time.perf_counter()
    pair_texts = stored_pair_texts(libs["pairs"].stored_pairs())
    rerank_results(base, run_images, labels, pair_texts, 5)
    print(f"FuDD re-ranking of {n} images' top 5 with {a.pairs} pairs: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
