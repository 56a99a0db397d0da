"""whyclip benchmarks, side by side in one run; writes a markdown table and a JSON file.

Usage:
  python bench/run.py --model models/vitb32 [--out bench/results] [--sizes 10000,100000,1000000]
                      [--generators clusters,clip-shaped] [--candidates "PQ256x4fs+rerank;IVF1024,Flat;..."]
                      [--synthetic-ingest 100000] [--skip ingest,query,images]

--model is a full-size ViT-B/32 folder (`whyclip make-test-model DIR --full-size`): random
weights, the real model's compute. Sections:

* ingest: prompts/s of `whyclip ingest` (fresh cache, automatic precision) against a plain
  `SentenceTransformer.encode` of the same prompts (fp32, its default batching), for the
  paper's seven descriptor files (../shared/data/descriptors) and a synthetic library; the
  same ingest without prefix sharing (the gain of computing shared prefixes once), tokens
  computed against the plain path's, and every prompt's cosine with the plain fp32 vector.
* query: image vector -> full explanation (exact scores for every class, evidence of the top
  5, library-wide top 10) against the paper's rule done the straightforward way in numpy
  (every descriptor similarity, then a per-class mean), on two kinds of synthetic library
  side by side (10 descriptors a class, dim 512): the old clustered vectors queried by
  noisy centres, and CLIP-shaped vectors (bench.synthetic: two cones, the
  modality gap, shared concepts) queried from the image cone; top-5 agreement and the
  largest score difference; index build time; bytes per descriptor on disk; process RSS.
  Then every candidate retrieval index (PQ fast-scan + exact re-rank, HNSW, IVF, the class
  inverted file, the exact scan): recall@10 against exact, one-query p50 / p99, build time.
* images: image encode latency, one image and batches, fp32 and automatic precision.
* cold, ingest-processes, image-pace (bench/speed.py): a one-image `whyclip explain`
  process against the bare floor (import torch + transformers, load the CLIP folder, embed
  one image) and `whyclip --help`, interleaved; `whyclip ingest` of the seven files in one
  process against a plain fp32 `SentenceTransformer.encode` process of the same prompts;
  eval's image path and batch explain against the bare batch-32 encode.

Ratios matter more than absolute figures on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")  # the 2-core machine the targets are set for
SHARED = ROOT.parent / "shared" / "data" / "descriptors"
sys.path.insert(0, str(ROOT))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- ingest ---------------------------------------------------------------------------------


def seven_files() -> list[Path]:
    files = sorted(SHARED.glob("descriptors_*.json"))
    if len(files) != 7:
        raise SystemExit(f"expected the paper's seven descriptor files in {SHARED}")
    return files


def synthetic_library(n: int, per_class: int = 10) -> dict[str, list[str]]:
    words = [
        "red",
        "green",
        "blue",
        "brown",
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
        "furry",
        "smooth",
        "rough",
        "wooden",
        "metal",
        "glass",
        "feathers",
        "scales",
        "wings",
        "legs",
        "tail",
        "eyes",
        "ears",
        "beak",
    ]
    rng = np.random.default_rng(0)
    lib: dict[str, list[str]] = {}
    for c in range(n // per_class):
        lib[f"thing {c}"] = [
            " ".join(rng.choice(words, size=int(rng.integers(2, 6)))) + f" {c}-{j}" for j in range(per_class)
        ]
    return lib


def timed_ingest(encoder, libraries: list) -> tuple[float, dict[str, np.ndarray], list[str]]:
    """Seconds to ingest ``libraries`` into a fresh store (fresh cache), their vectors by
    prompt, and every prompt in ingest order."""
    from whyclip.ingest.services.library_ingest import plan_ingest, run_ingest
    from whyclip.store import Store
    from whyclip.store.db import embedding_cache

    with tempfile.TemporaryDirectory() as home:
        store = Store.open(home)
        plans = [plan_ingest(src, f"lib{i}", encoder) for i, src in enumerate(libraries)]
        prompts = [p for plan in plans for p in plan.prompts]
        t = time.perf_counter()
        for plan in plans:
            run_ingest(store, plan, encoder)
        seconds = time.perf_counter() - t
        vectors = {p: v for p, (v, _) in embedding_cache.lookup(store.engine, encoder.cache_key, prompts).items()}
    return seconds, vectors, prompts


def bench_ingest(model: str, sources: dict[str, list], results: dict) -> None:
    from sentence_transformers import SentenceTransformer

    from whyclip.ingest.encoder.clip_encoder import load_encoder

    encoder = load_encoder(model)  # automatic precision and prefix sharing, as `whyclip ingest` runs
    unshared = load_encoder(model, share_prefixes=False)  # the same precision, every prompt in full
    plain = SentenceTransformer(model, device="cpu")
    plain.max_seq_length = 77
    for label, libraries in sources.items():
        from whyclip.ingest.encoder.textpath import PassStats

        before = dataclasses.replace(encoder._text.stats) if encoder._text else PassStats()  # built on first use
        ours, vectors, prompts = timed_ingest(encoder, libraries)
        after = encoder._text.stats if encoder._text else None
        no_prefix, _, _ = timed_ingest(unshared, libraries)
        t = time.perf_counter()
        ref = plain.encode(prompts)  # fp32, default batch size 32
        base = time.perf_counter() - t
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        cosines = np.sum(np.stack([vectors[p] for p in prompts]) * ref, axis=1)
        n = len(prompts)
        row = {
            "library": label,
            "prompts": n,
            "whyclip_s": ours,
            "whyclip_per_s": n / ours,
            "no_prefix_s": no_prefix,
            "no_prefix_per_s": n / no_prefix,
            "prefix_gain": no_prefix / ours,
            "plain_s": base,
            "plain_per_s": n / base,
            "speedup": base / ours,
            "precision": encoder.precision,
            "checked_cosine": encoder.checked.get("text"),
            "min_cosine_vs_plain": float(cosines.min()),
            "mean_cosine_vs_plain": float(cosines.mean()),
        }
        if after is not None:
            row["tokens_plain"] = after.plain_tokens - before.plain_tokens
            row["tokens_computed"] = (after.shared_tokens + after.own_tokens) - (
                before.shared_tokens + before.own_tokens
            )
        results["ingest"].append(row)
        print(
            f"ingest {label}: whyclip {n / ours:.0f}/s (no prefix sharing {n / no_prefix:.0f}/s) vs plain "
            f"{n / base:.0f}/s ({base / ours:.2f}x), min cosine vs plain {cosines.min():.5f}",
            file=sys.stderr,
        )


# -- query ----------------------------------------------------------------------------------


def clustered_library(n_desc: int, per_class: int = 10, dim: int = 512, seed: int = 0):
    """The old query data: unit descriptor vectors around one random centre per class
    (spread 0.6), queried by noisy centres. No real library looks like this (see
    bench.synthetic); kept to compare with the figures measured on it."""
    from whyclip.store import DraftClass, EncoderInfo, LibraryDraft

    rng = np.random.default_rng(seed)
    n_classes = n_desc // per_class
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, per_class, axis=0) + 0.6 * rng.standard_normal((n_desc, dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    base = centres + 0.3 * rng.standard_normal((n_classes, dim)).astype(np.float32) / np.sqrt(dim)
    raw = np.concatenate([vectors, base])
    del vectors
    norms = np.linalg.norm(raw, axis=1)
    raw /= norms[:, None]
    classes, rows = [], {}
    for c in range(n_classes):
        prompts = [f"c{c}, which has d{j}" for j in range(per_class)]
        for j, p in enumerate(prompts):
            rows[p] = c * per_class + j
        rows[f"a photo of a c{c}."] = n_desc + c
        classes.append(
            DraftClass(
                f"c{c}", f"a photo of a c{c}.", [f"d{j}" for j in range(per_class)], prompts, [False] * per_class
            )
        )
    enc = EncoderInfo("synthetic-512", "synthetic", dim, 100.0)
    draft = LibraryDraft("synthetic", enc, "paper", "a photo of a {class}.", classes, rows, raw, norms)
    return draft, centres


def cluster_queries(centres: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), n)
    q = centres[picks] + 0.8 * rng.standard_normal((n, centres.shape[1])).astype(np.float32) / np.sqrt(centres.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def query_data(generator: str, size: int, runs: int):
    """(draft, queries, what the queries are) for one generator: the old clusters with
    their noisy centres, or CLIP-shaped vectors with image-cone queries."""
    if generator == "clusters":
        draft, centres = clustered_library(size)
        return draft, cluster_queries(centres, runs + 3), "noisy class centres"
    from bench.synthetic import clip_shaped, library_draft

    lib = clip_shaped(size // 10, 10)
    draft = library_draft(lib)
    queries, _ = lib.images(runs + 3, seed=1)
    del lib
    return draft, queries, "image cone"


QUERY_PROCESS = """
import re, sys, numpy as np
sys.path.insert(0, {root!r})
from whyclip.store import Store
lib = Store.open({home!r}, create=False).load("synthetic")
for q in np.load({queries!r}):
    lib.explain(q[None], top=5, retrieve=10)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024)
"""


def query_process_rss(home: str, queries: np.ndarray) -> float:
    """Peak RSS (MB) of a fresh process that loads the library and explains 20 images."""
    import subprocess

    path = str(Path(home) / "queries.npy")
    np.save(path, queries)
    code = QUERY_PROCESS.format(root=str(ROOT), home=home, queries=path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def straightforward_scores(img: np.ndarray, vectors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The paper's rule as a user writes it: every similarity, then each class's mean."""
    sims = vectors @ img
    return np.add.reduceat(sims, offsets[:-1]) / np.diff(offsets)


def timed(fn, queries: np.ndarray, warm: int = 3) -> list[float]:
    """Seconds of ``fn`` per query, each method in its own loop so each runs hot."""
    out = []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        fn(q)
        if i >= warm:
            out.append(time.perf_counter() - t)
    return out


CANDIDATES = ("PQ256x4fs+rerank", "PQ128x4fs+rerank", "HNSW32", "IVF1024,Flat", "ClassIVF")
HNSW_UP_TO = 200_000  # descriptors: building the graph at 1M takes over 20 minutes on 2 cores
CLASS_IVF_UP_TO = 200_000  # its probe calibration at 1M (100k classes) takes longer than the rest of the run


def bench_query_indexes(
    generator: str, size: int, lib, queries: np.ndarray, results: dict, candidates: Sequence[str] = CANDIDATES
) -> None:
    """Every candidate index over the library's own vectors, built and calibrated as
    ``whyclip ingest --index`` does (on proxy image queries), then measured on the bench
    queries: recall@10 against the exact scan, one-query p50 / p99, build time, bytes."""
    from whyclip.store.vectors.files import build_retrieval
    from whyclip.store.vectors.recall_tuning import proxy_queries, recall
    from whyclip.store.vectors.retrieval import ClassIVF
    from whyclip.store.vectors.search import exact_search

    vectors, matrices = lib.vectors, lib.matrices
    _, want = exact_search(vectors, queries[3:], 10)
    exact_t = timed(lambda q: exact_search(vectors, q[None], 10), queries)
    results["query_indexes"].append(
        {
            "generator": generator,
            "descriptors": size,
            "index": "exact scan (numpy, chunked)",
            "recall_at_10": 1.0,
            "p50_ms": pct(exact_t, 50),
            "p99_ms": pct(exact_t, 99),
            "build_s": 0.0,
            "index_bytes": 0,
            "predicted_recall": 1.0,
            "knob": "-",
        }
    )
    proxy = proxy_queries(vectors, matrices.offsets)
    for factory in candidates:
        if (factory == "HNSW32" and size > HNSW_UP_TO) or (factory == "ClassIVF" and size > CLASS_IVF_UP_TO):
            continue
        t = time.perf_counter()
        built = build_retrieval(vectors, matrices, factory, proxy)
        build = time.perf_counter() - t
        searcher, params = built.searcher, built.params
        # a PQ index that calibration sent to the exact scan is measured too: the reason it is not used
        got = searcher.search(queries[3:], 10)[1]
        one = timed(lambda q, searcher=searcher: searcher.search(q[None], 10), queries)
        size_bytes = sum(len(b) for b in built.blobs.values())
        if built.faiss_index is not None:
            import faiss

            size_bytes = len(faiss.serialize_index(built.faiss_index))
        elif isinstance(searcher, ClassIVF):  # factory "ClassIVF"
            size_bytes = searcher.codes.nbytes
        knob = next((f"{k} {params[k]}" for k in ("depth", "nprobe", "efSearch", "probe") if k in params), "-")
        results["query_indexes"].append(
            {
                "generator": generator,
                "descriptors": size,
                "index": factory,
                "knob": knob,
                "recall_at_10": recall(got, want),
                "predicted_recall": params.get("recall_at_10"),
                "p50_ms": pct(one, 50),
                "p99_ms": pct(one, 99),
                "build_s": build,
                "index_bytes": size_bytes,
                "exact_fallback": params.get("exact_fallback"),
                "warning": params.get("warning"),
            }
        )
        print(
            f"query {generator} {size}: {factory} {knob}: recall {recall(got, want):.3f} "
            f"(proxy said {params.get('recall_at_10')}), p50 {pct(one, 50):.2f} ms vs exact {pct(exact_t, 50):.2f} ms",
            file=sys.stderr,
        )
        del built, searcher


def bench_query(generator: str, size: int, runs: int, results: dict, candidates: Sequence[str] = CANDIDATES) -> None:
    """A library written as ``whyclip ingest`` writes it (default index), then one image
    vector -> full explanation against the straightforward numpy rule, and the candidates."""
    from whyclip.store import Store
    from whyclip.store.vectors.recall_tuning import recall
    from whyclip.store.vectors.search import exact_search

    with tempfile.TemporaryDirectory() as home:
        draft, queries, kind = query_data(generator, size, runs)
        store = Store.open(home)
        t = time.perf_counter()
        info = store.write_library(draft)
        build = time.perf_counter() - t
        del draft
        t = time.perf_counter()
        lib = store.load("synthetic")
        load = time.perf_counter() - t
        offsets = lib.matrices.offsets
        in_ram = np.array(lib.vectors)  # the straightforward way holds its matrix in memory
        ours = timed(lambda q: lib.explain(q[None], top=5, retrieve=10), queries)
        no_hits = timed(lambda q: lib.explain(q[None], top=5, retrieve=0), queries)
        scores_only = timed(lambda q: lib.scores(q[None], "mean"), queries)
        retrieval = timed(lambda q: lib.retrieve(q[None], 10), queries)
        plain = timed(lambda q, in_ram=in_ram: straightforward_scores(q, in_ram, offsets), queries)
        agree, worst = 0, 0.0
        for q in queries:
            (exp,) = lib.explain(q[None], top=5, retrieve=0)
            ref = straightforward_scores(q, in_ram, offsets)
            agree += [lib.class_names[j] for j in np.argsort(-ref, kind="stable")[:5]] == [c.name for c in exp.classes]
            worst = max(worst, float(np.max(np.abs(lib.scores(q[None], "mean")[0] - ref))))
        got = np.array([[r.descriptor_id for r in hits] for hits in lib.retrieve(queries, 10)])
        bench_recall = recall(got, lib.ids[exact_search(in_ram, queries, 10)[1]])
        query_rss = query_process_rss(home, queries[:20])
        on_disk = folder_bytes(Path(home))
        r = lib.retrieval
        results["query"].append(
            {
                "generator": generator,
                "queries": kind,
                "descriptors": size,
                "classes": info.n_classes,
                "build_s": build,
                "load_s": load,
                "explain_p50_ms": pct(ours, 50),
                "explain_p95_ms": pct(ours, 95),
                "explain_no_retrieval_p50_ms": pct(no_hits, 50),
                "scores_p50_ms": pct(scores_only, 50),
                "scores_p95_ms": pct(scores_only, 95),
                "straightforward_p50_ms": pct(plain, 50),
                "straightforward_p95_ms": pct(plain, 95),
                "scores_speedup": statistics.median(plain) / statistics.median(scores_only),
                "top5_agreement": agree / len(queries),
                "max_abs_score_diff": worst,
                "retrieval_p50_ms": pct(retrieval, 50),
                "retrieval_p95_ms": pct(retrieval, 95),
                "index": r["index"] + (" -> exact scan" if r["exact"] and info.index_factory != "Flat" else ""),
                "index_params": info.index_params,
                "recall_at_10": r["recall_at_10"],
                "calibrated_on": r["calibrated_on"] or "-",
                "bench_queries_recall_at_10": bench_recall,
                "bytes_per_descriptor_on_disk": on_disk / size,
                "query_process_rss_mb": query_rss,
                "query_process_rss_bytes_per_descriptor": query_rss * 2**20 / size,
            }
        )
        print(
            f"query {generator} {size}: explain p50 {pct(ours, 50):.1f} ms ({pct(no_hits, 50):.1f} without "
            f"retrieval), retrieval {pct(retrieval, 50):.2f} ms, recall {bench_recall:.3f} ({r['index']})",
            file=sys.stderr,
        )
        del in_ram
        if candidates:
            bench_query_indexes(generator, size, lib, queries, results, candidates)


# -- images ---------------------------------------------------------------------------------


def bench_images(model: str, runs: int, results: dict) -> None:
    from PIL import Image

    from whyclip.ingest import load_encoder

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(32)]
    for precision in ("fp32", "auto"):
        enc = load_encoder(model, precision=precision)
        enc.embed_images(pictures[:2])
        for batch in (1, 8, 32):
            times = []
            for _ in range(max(3, runs // batch)):
                t = time.perf_counter()
                enc.embed_images(pictures[:batch])
                times.append(time.perf_counter() - t)
            results["images"].append(
                {
                    "precision": enc.precision,
                    "batch": batch,
                    "p50_ms": pct(times, 50),
                    "p95_ms": pct(times, 95),
                    "per_image_ms": pct(times, 50) / batch,
                    "checked_cosine": enc.checked.get("image"),
                }
            )


# -- report ---------------------------------------------------------------------------------


def index_note(r: dict) -> str:
    params = r.get("index_params") or {}
    return f" probe {params['probe']}" if "probe" in params else ""


def query_tables(results: dict) -> list[str]:
    """The query section: full explanations per generator, then every candidate index."""
    out = []
    if results["query"]:
        out.append("\n## Query (one image vector; ms; both generators side by side)\n")
        out.append(
            "| data (queries) | descriptors | classes | full explanation p50 / p95 | same without retrieval p50 "
            "| exact scores p50 | straightforward numpy p50 | scores speedup | top-5 agree | max abs diff "
            "| top-10 retrieval p50 / p95 | index | recall@10 stored (calibrated on) | recall@10 on these queries "
            "| build s | load s | bytes/descriptor on disk | query process RSS MB |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|")
        for r in results["query"]:
            out.append(
                f"| {r['generator']} ({r['queries']}) | {r['descriptors']:,} | {r['classes']:,} | "
                f"{r['explain_p50_ms']:.1f} / {r['explain_p95_ms']:.1f} | {r['explain_no_retrieval_p50_ms']:.1f} | "
                f"{r['scores_p50_ms']:.2f} | {r['straightforward_p50_ms']:.2f} | {r['scores_speedup']:.1f}x | "
                f"{r['top5_agreement']:.0%} | {r['max_abs_score_diff']:.1e} | "
                f"{r['retrieval_p50_ms']:.2f} / {r['retrieval_p95_ms']:.2f} | {r['index']} | "
                f"{r['recall_at_10']:.3f} ({r['calibrated_on']}) | {r['bench_queries_recall_at_10']:.3f} | "
                f"{r['build_s']:.1f} | {r['load_s']:.2f} | {r['bytes_per_descriptor_on_disk']:.0f} | "
                f"{r['query_process_rss_mb']:.0f} |"
            )
    if results.get("query_indexes"):
        out.append(
            "\n## Retrieval index candidates (one query, top 10; the PQ codes in shards, one thread a core, "
            "other FAISS indexes on one thread; recall@10 against the exact scan)\n"
        )
        out.append(
            'Each built and calibrated as `whyclip ingest --index` does, on proxy image queries; "proxy said" '
            'is the recall the calibration predicted, "these queries" the recall measured on the bench\'s.\n'
        )
        out.append(
            "| data | descriptors | index | calibrated knob | recall@10, these queries | proxy said | p50 ms | p99 ms "
            "| build s | index bytes | calibration's verdict |"
        )
        out.append("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
        for r in results["query_indexes"]:
            said = f"{r['predicted_recall']:.3f}" if r.get("predicted_recall") is not None else "-"
            verdict = (
                r.get("exact_fallback") or r.get("warning") or ("exact" if r["index"].startswith("exact") else "used")
            )
            out.append(
                f"| {r['generator']} | {r['descriptors']:,} | {r['index']} | {r['knob']} | {r['recall_at_10']:.3f} | "
                f"{said} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['build_s']:.1f} | {r['index_bytes']:,} | "
                f"{verdict} |"
            )
    return out


def _row(target: str, measured: str, ok: bool | None) -> str:
    return f"| {target} | {measured} | {'-' if ok is None else 'yes' if ok else '**no**'} |"


def targets(results: dict) -> list[str]:
    """Issue 13's targets, each against what this run measured (a row only for sections
    that ran): the one table to read first."""
    rows = []
    for r in results["query"]:
        if r["generator"] != "clip-shaped":
            continue
        n = f"{r['descriptors']:,}"
        inside = r["explain_p50_ms"] - r["explain_no_retrieval_p50_ms"]
        one = next(
            (
                x
                for x in results["query_indexes"]
                if x["generator"] == r["generator"]
                and x["descriptors"] == r["descriptors"]
                and r["index"].startswith(x["index"])
            ),
            None,
        )
        big = r["descriptors"] >= 1_000_000
        rows.append(
            _row(
                f"{n}: recall@10 >= 0.95, image-cone queries",
                f"{r['bench_queries_recall_at_10']:.3f} (stored {r['recall_at_10']:.3f}, {r['calibrated_on']})",
                r["bench_queries_recall_at_10"] >= 0.95,
            )
        )
        q = one["p50_ms"] if one else r["retrieval_p50_ms"]
        exact = next(
            (
                x["p50_ms"]
                for x in results["query_indexes"]
                if x["descriptors"] == r["descriptors"]
                and x["generator"] == r["generator"]
                and x["index"].startswith("exact")
            ),
            None,
        )
        rows.append(
            _row(
                f"{n}: one query p50" + (" <= 10 ms" if big else ""),
                f"{q:.2f} ms ({r['index']}" + (f"; exact scan {exact:.1f} ms" if exact else "") + ")",
                q <= 10 if big else None,
            )
        )
        rows.append(
            _row(
                f"{n}: top-10 inside a full explanation p50" + (" <= 15 ms" if big else ""),
                f"{inside:.1f} ms ({r['explain_p50_ms']:.1f} with, {r['explain_no_retrieval_p50_ms']:.1f} without)",
                inside <= 15 if big else None,
            )
        )
    c = results.get("cold_start")
    if c:
        rows.append(
            _row(
                "cold one-image explain <= 1.0x the bare floor",
                f"{c['explain_over_floor']:.2f}x wall "
                f"({c['explain_median_s']:.2f} s vs {c['floor_median_s']:.2f} s), "
                f"{c['explain_cpu_over_floor']:.2f}x CPU",
                c["explain_over_floor"] <= 1.0,
            )
        )
        rows.append(_row("`whyclip --help` <= 0.3 s", f"{c['help_median_s']:.2f} s", c["help_median_s"] <= 0.3))
    g = results.get("ingest_processes")
    if g:
        seven = len(g["files"]) == 7
        rows.append(
            _row(
                f"ingest of {'the seven files' if seven else ', '.join(g['files'])} >= 3x plain encode, whole "
                "processes",
                f"{g['speedup']:.2f}x wall ({g['whyclip_median_s']:.1f} s vs {g['plain_median_s']:.1f} s), "
                f"{g['cpu_speedup']:.2f}x CPU",
                g["speedup"] >= 3,
            )
        )
        if seven:
            rows.append(
                _row("the seven files in <= 20 s", f"{g['whyclip_median_s']:.1f} s", g["whyclip_median_s"] <= 20)
            )
    m = results.get("image_pace")
    if m:
        rows.append(
            _row(
                "eval's image path within 1.2x of the bare batch-32 encode",
                f"{m['cached_path_over_bare']:.2f}x",
                m["cached_path_over_bare"] <= 1.2,
            )
        )
        rows.append(
            _row(
                "batch explain within 1.2x of the bare batch-32 encode",
                f"{m['batch_explain_over_bare']:.2f}x",
                m["batch_explain_over_bare"] <= 1.2,
            )
        )
    if not rows:
        return []
    return ["## Targets (issue 13), this run\n", "| target | measured | met |", "|---|---|---|", *rows, ""]


def markdown(results: dict) -> str:
    out = [f"# whyclip benchmarks\n\n{results['machine']}\n", *targets(results)]
    if results["ingest"]:
        out.append("## Ingest (prompts/s; whyclip = `whyclip ingest` path, fresh cache)\n")
        out.append(
            "| library | prompts | whyclip /s | same, no prefix sharing /s | plain ST fp32 /s | speedup vs plain "
            "| prefix-sharing gain | tokens computed / plain | precision | cosine vs plain fp32, every prompt: "
            "min (mean) |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in results["ingest"]:
            tokens = f"{r['tokens_computed']:,} / {r['tokens_plain']:,}" if "tokens_plain" in r else "-"
            out.append(
                f"| {r['library']} | {r['prompts']:,} | {r['whyclip_per_s']:.0f} ({r['whyclip_s']:.1f} s) | "
                f"{r['no_prefix_per_s']:.0f} ({r['no_prefix_s']:.1f} s) | {r['plain_per_s']:.0f} "
                f"({r['plain_s']:.1f} s) | {r['speedup']:.2f}x | {r['prefix_gain']:.2f}x | {tokens} | "
                f"{r['precision']} | {r['min_cosine_vs_plain']:.5f} ({r['mean_cosine_vs_plain']:.6f}) |"
            )
    out.extend(query_tables(results))
    if results["images"]:
        out.append("\n## Image encoding (ms)\n")
        out.append("| precision | batch | p50 | p95 | per image | min cosine vs fp32 |\n|---|---:|---:|---:|---:|---|")
        for r in results["images"]:
            cos = f"{r['checked_cosine']:.5f}" if r["checked_cosine"] else "-"
            out.append(
                f"| {r['precision']} | {r['batch']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                f"{r['per_image_ms']:.1f} | {cos} |"
            )
    return "\n".join(out) + "\n"


# -- whole processes (bench/speed.py) ---------------------------------------------------------


def run_speed_sections(args, skip: set[str], results: dict) -> None:
    """Cold start, the seven files as whole processes, images at the encoder's pace."""
    if not args.model:
        return
    from bench import speed

    if "cold" not in skip:
        speed.bench_cold_start(args.model, args.repeats, results)
    if "ingest-processes" not in skip:
        speed.bench_ingest_processes(args.model, max(1, args.repeats // 2), results)
    if "image-pace" not in skip:
        speed.bench_image_pace(args.model, 128, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="full-size random-weight ViT-B/32 folder (needed for ingest and images)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument(
        "--sizes",
        default="10000,100000",
        help="query benchmark library sizes (add 1000000 for the 1M rows: 6 GB, tens of minutes)",
    )
    ap.add_argument(
        "--generators", default="clusters,clip-shaped", help="query data: clusters (the old), clip-shaped, or both"
    )
    ap.add_argument(
        "--candidates",
        default=";".join(CANDIDATES),
        help="query section: the candidate indexes to measure, separated by ';' ('' for none)",
    )
    ap.add_argument(
        "--synthetic-ingest", type=int, default=100_000, help="descriptors in the synthetic ingest library (0: skip)"
    )
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to skip: ingest, query, images, cold, ingest-processes, image-pace",
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="interleaved runs of each whole process (cold start; ingest: half)"
    )
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from importlib.metadata import version

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"torch {version('torch')}, faiss {version('faiss-cpu')}, numpy {np.__version__}",
        "ingest": [],
        "query": [],
        "query_indexes": [],
        "images": [],
    }
    # The query section runs first, before torch is imported: torch's OpenMP threads slow
    # numpy's BLAS in the same process, which would flatter whyclip against the baseline.
    if "query" not in skip:
        for size in map(int, args.sizes.split(",")):
            for generator in args.generators.split(","):
                bench_query(generator, size, args.runs, results, [c for c in args.candidates.split(";") if c])
    if "ingest" not in skip:
        if not args.model:
            raise SystemExit("--model is needed for the ingest benchmark (or --skip ingest)")
        sources: dict[str, list] = {"paper's seven files": seven_files()}
        if args.synthetic_ingest:
            sources[f"synthetic {args.synthetic_ingest:,}"] = [synthetic_library(args.synthetic_ingest)]
        bench_ingest(args.model, sources, results)
    if "images" not in skip and args.model:
        bench_images(args.model, args.runs, results)
    run_speed_sections(args, skip, results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    from bench import speed

    table = markdown(results) + "\n".join(speed.markdown(results)) + "\n"
    (out / "bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
