"""Library page on a large library: build a synthetic one (default 100k classes x 10
descriptors = 1M rows, random vectors), then time the page's database work and a full
rerun of the page through Streamlit's AppTest.

Usage: python bench/library_page_latency.py [--classes 100000] [--per-class 10] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

APP = str(Path(__file__).resolve().parents[1] / "ui" / "dashboard" / "streamlit_app.py")
WORDS = [
    "red",
    "green",
    "blue",
    "long",
    "short",
    "round",
    "flat",
    "striped",
    "spotted",
    "shiny",
    "small",
    "large",
    "curved",
    "pointed",
]


def build(home: str, n_classes: int, per_class: int, dim: int = 16) -> None:
    from whyclip.store import DraftClass, EncoderInfo, LibraryDraft, Store

    rng = np.random.default_rng(0)
    classes: list[DraftClass] = []
    prompts: dict[str, int] = {}
    for c in range(n_classes):
        descs = [f"{WORDS[(c + j) % len(WORDS)]} {WORDS[(c * 7 + j) % len(WORDS)]} part {j}" for j in range(per_class)]
        ps = [f"class {c}, which has {d}" for d in descs]
        for p in [*ps, f"a photo of a class {c}."]:
            prompts[p] = len(prompts)
        classes.append(DraftClass(f"class {c}", f"a photo of a class {c}.", descs, ps, [False] * per_class))
    vectors = rng.standard_normal((len(prompts), dim)).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    enc = EncoderInfo("synthetic", "synthetic", dim, 100.0)
    Store.open(home).write_library(
        LibraryDraft("big", enc, "paper", "a photo of a {class}.", classes, prompts, vectors / norms[:, None], norms)
    )


def timed(fn, runs: int = 5) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="whyclip-big-")
    os.environ["WHYCLIP_HOME"] = home
    from whyclip.store import Store
    from whyclip.store.db import browse

    t = time.perf_counter()
    if not (Path(home) / "whyclip.db").exists():
        build(home, args.classes, args.per_class)
    print(f"library ready in {time.perf_counter() - t:.1f} s ({home})")
    store = Store.open(home, create=False)
    info = store.library("big")
    rows = [
        ("count descriptor rows", lambda: browse.count_descriptor_rows(store.engine, info)),
        ("count rows matching 'spotted'", lambda: browse.count_descriptor_rows(store.engine, info, "spotted")),
        ("first page (50 rows)", lambda: browse.descriptors_page(store.engine, info, "", "label order", 0, 50)),
        ("page 10,000", lambda: browse.descriptors_page(store.engine, info, "", "label order", 500_000, 50)),
        (
            "search page 'striped round'",
            lambda: browse.descriptors_page(store.engine, info, "striped round", "label order", 0, 50),
        ),
        ("count shared descriptors", lambda: browse.count_shared_descriptors(store.engine, info)),
        ("shared descriptors page", lambda: browse.shared_descriptors_page(store.engine, info, 0, 50)),
    ]
    print(f"{info.n_descriptors:,} descriptors, {info.n_classes:,} classes\n| query | median ms |\n|---|---:|")
    for name, fn in rows:
        print(f"| {name} | {timed(fn):.0f} |")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    t = time.perf_counter()
    at.switch_page("library_page.py").run()
    first = time.perf_counter() - t
    assert not at.exception, at.exception
    t = time.perf_counter()
    at.number_input(key="d_page").set_value(5000).run()
    rerun = time.perf_counter() - t
    print(f"| library page, first run (counts computed) | {first * 1000:.0f} |")
    print(f"| library page, go to page 5,000 (counts cached) | {rerun * 1000:.0f} |")


if __name__ == "__main__":
    main()
