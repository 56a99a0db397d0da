"""What-if speed: answering an edit from a scored run (only the edited classes rescored)
against rescoring every class of the edited library, side by side, on synthetic vectors.

Usage: python bench/whatif_speed.py [--images 5000] [--classes 1000] [--per-class 40] [--dim 512] [--reps 5]

The library is published into a temporary store (random unit vectors: the speed does not
depend on their geometry); the run is synthetic image vectors with labels. Prints the
one-off scoring of the run, then the median time per answer for a one-class drop, a
one-class add and a ten-class edit, each beside the full rescoring (every class's score of
every image, then the predictions) it replaces, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from whyclip.store import DraftClass, EncoderInfo, LibraryDraft, Store
from whyclip.store.analysis.run_records import RunData, RunInfo
from whyclip.store.analysis.whatif import WhatIf, plan_edit


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--aggregate", default="mean")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    texts = [[f"c{c} d{j}" for j in range(a.per_class)] for c in range(a.classes)]
    prompts = [t for ts in texts for t in ts] + [f"a photo of a c{c}." for c in range(a.classes)]
    vectors = unit(rng, len(prompts), a.dim)
    with tempfile.TemporaryDirectory() as home:
        store = Store.open(home)
        draft = LibraryDraft(
            "bench",
            EncoderInfo("rand", "rand", a.dim, 100.0),
            "{descriptor}",
            "a photo of a {class}.",
            [DraftClass(f"c{c}", f"a photo of a c{c}.", ts, list(ts), [False] * len(ts)) for c, ts in enumerate(texts)],
            {p: i for i, p in enumerate(prompts)},
            vectors,
            np.ones(len(prompts), np.float32),
            index_factory="Flat",
        )
        info = store.write_library(draft)
        lib = store.load("bench")
        x = unit(rng, a.images, a.dim)
        labels = rng.integers(0, a.classes, a.images)
        run = RunData(
            RunInfo(0, "bench", "bench", info.version, info.id, info.created_at, "synthetic", "rand", a.images),
            [f"img{i}" for i in range(a.images)],
            labels,
            x,
            {},
        )
        t = time.perf_counter()
        session = WhatIf(run, lib, a.aggregate)
        print(
            f"{a.images} images, {a.classes} classes x {a.per_class} descriptors, dim {a.dim}, {a.aggregate}: "
            f"scoring the run once {time.perf_counter() - t:.3f}s"
        )
        new = unit(rng, 1, a.dim)[0]
        edits = {
            "drop 1 descriptor of 1 class": (plan_edit(lib, [("c7", "c7 d3")]), {}),
            "add 1 descriptor to 1 class": (plan_edit(lib, [], [("c7", "new one")]), {"new one": (new, 1.0)}),
            "drop 1 descriptor in each of 10 classes": (
                plan_edit(lib, [(f"c{c}", f"c{c} d0") for c in range(0, 1000, 100)][: a.classes]),
                {},
            ),
        }

        def full(edit) -> np.ndarray:  # every class rescored from scratch: what the what-if avoids
            scores = np.empty((a.images, a.classes), np.float32)
            for start in range(0, a.images, 256):
                scores[start : start + 256] = lib.scores(x[start : start + 256], a.aggregate)
            return np.argmax(scores, axis=1)

        for name, (edit, vecs) in edits.items():
            answer, baseline = [], []
            for _ in range(a.reps):  # interleaved, so machine noise hits both alike
                t = time.perf_counter()
                session.answer(edit, vecs)
                answer.append(time.perf_counter() - t)
                t = time.perf_counter()
                full(edit)
                baseline.append(time.perf_counter() - t)
            m, b = statistics.median(answer), statistics.median(baseline)
            print(f"{name}: what-if answer {1000 * m:.1f} ms, full rescoring {1000 * b:.1f} ms ({b / m:.1f}x)")


if __name__ == "__main__":
    main()
