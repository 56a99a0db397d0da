"""whyclip benchmarks, side by side in one run; writes a markdown table and a JSON file.

Usage:
  python bench/run.py --model models/vitb32 [--out bench/results] [--sizes 10000,100000,1000000]
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
  (every descriptor similarity, then a per-class mean), on synthetic libraries (10
  descriptors a class, clustered unit vectors, dim 512); top-5 agreement and the largest
  score difference; index build time; bytes per descriptor on disk; process RSS.
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "descriptors"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/speed.py


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
    words = ("red green blue brown long short round flat striped spotted shiny small large curved pointed "
             "furry smooth rough wooden metal glass feathers scales wings legs tail eyes ears beak").split()  # fmt: skip
    rng = np.random.default_rng(0)
    lib: dict[str, list[str]] = {}
    for c in range(n // per_class):
        lib[f"thing {c}"] = [" ".join(rng.choice(words, size=int(rng.integers(2, 6)))) + f" {c}-{j}" for j in range(per_class)]
    return lib


def timed_ingest(encoder, libraries: list) -> tuple[float, dict[str, np.ndarray], list[str]]:
    """Seconds to ingest ``libraries`` into a fresh store (fresh cache), their vectors by
    prompt, and every prompt in ingest order."""
    from whyclip.ingest.job import plan_ingest, run_ingest
    from whyclip.store.db import cache
    from whyclip.store import Store

    with tempfile.TemporaryDirectory() as home:
        store = Store.open(home)
        plans = [plan_ingest(src, f"lib{i}", encoder) for i, src in enumerate(libraries)]
        prompts = [p for plan in plans for p in plan.prompts]
        t = time.perf_counter()
        for plan in plans:
            run_ingest(store, plan, encoder)
        seconds = time.perf_counter() - t
        vectors = {p: v for p, (v, _) in cache.lookup(store, encoder.cache_key, prompts).items()}
    return seconds, vectors, prompts


def bench_ingest(model: str, sources: dict[str, list], results: dict) -> None:
    from sentence_transformers import SentenceTransformer

    from whyclip.ingest.encoder import load_encoder

    encoder = load_encoder(model)  # automatic precision and prefix sharing, as `whyclip ingest` runs
    unshared = load_encoder(model, share_prefixes=False)  # the same precision, every prompt in full
    plain = SentenceTransformer(model, device="cpu")
    plain.max_seq_length = 77
    for label, libraries in sources.items():
        from whyclip.ingest.textpath import PassStats

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
            "library": label, "prompts": n, "whyclip_s": ours, "whyclip_per_s": n / ours,
            "no_prefix_s": no_prefix, "no_prefix_per_s": n / no_prefix, "prefix_gain": no_prefix / ours,
            "plain_s": base, "plain_per_s": n / base, "speedup": base / ours, "precision": encoder.precision,
            "checked_cosine": encoder.checked.get("text"), "min_cosine_vs_plain": float(cosines.min()),
            "mean_cosine_vs_plain": float(cosines.mean()),
        }  # fmt: skip
        if after is not None:
            row["tokens_plain"] = after.plain_tokens - before.plain_tokens
            row["tokens_computed"] = (after.shared_tokens + after.own_tokens) - (before.shared_tokens + before.own_tokens)
        results["ingest"].append(row)
        print(f"ingest {label}: whyclip {n / ours:.0f}/s (no prefix sharing {n / no_prefix:.0f}/s) vs plain "
              f"{n / base:.0f}/s ({base / ours:.2f}x), min cosine vs plain {cosines.min():.5f}", file=sys.stderr)  # fmt: skip


# -- query ----------------------------------------------------------------------------------


def clustered_library(n_desc: int, per_class: int = 10, dim: int = 512, seed: int = 0):
    """Unit descriptor vectors around one random centre per class (spread 0.6)."""
    from whyclip.store import DraftClass, EncoderInfo, LibraryDraft

    rng = np.random.default_rng(seed)
    n_classes = n_desc // per_class
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, per_class, axis=0) + 0.6 * rng.standard_normal((n_desc, dim)).astype(np.float32) / np.sqrt(dim)
    base = centres + 0.3 * rng.standard_normal((n_classes, dim)).astype(np.float32) / np.sqrt(dim)
    raw = np.concatenate([vectors, base])
    norms = np.linalg.norm(raw, axis=1)
    classes, rows = [], {}
    for c in range(n_classes):
        prompts = [f"c{c}, which has d{j}" for j in range(per_class)]
        for j, p in enumerate(prompts):
            rows[p] = c * per_class + j
        rows[f"a photo of a c{c}."] = n_desc + c
        classes.append(DraftClass(f"c{c}", f"a photo of a c{c}.", [f"d{j}" for j in range(per_class)], prompts,
                                  [False] * per_class))  # fmt: skip
    enc = EncoderInfo("synthetic-512", "synthetic", dim, 100.0)
    draft = LibraryDraft("synthetic", enc, "paper", "a photo of a {class}.", classes, rows, raw / norms[:, None], norms)
    return draft, centres


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


def bench_query(size: int, runs: int, results: dict) -> None:
    from whyclip.store import Store

    with tempfile.TemporaryDirectory() as home:
        draft, centres = clustered_library(size)
        store = Store.open(home)
        t = time.perf_counter()
        info = store.write_library(draft)
        build = time.perf_counter() - t
        del draft
        t = time.perf_counter()
        lib = store.load("synthetic")
        load = time.perf_counter() - t
        rng = np.random.default_rng(1)
        picks = rng.integers(0, len(centres), runs + 3)
        queries = centres[picks] + 0.8 * rng.standard_normal((len(picks), centres.shape[1])).astype(np.float32) / np.sqrt(centres.shape[1])
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        offsets = lib.matrices.offsets

        def timed(fn) -> list[float]:
            """Each method in its own loop, so each runs hot (BLAS threads awake)."""
            out = []
            for i, q in enumerate(queries):
                t = time.perf_counter()
                fn(q)
                if i >= 3:  # warm-up
                    out.append(time.perf_counter() - t)
            return out

        in_ram = np.array(lib.vectors)  # the straightforward way holds its matrix in memory
        ours = timed(lambda q: lib.explain(q[None], top=5, retrieve=10))
        scores_only = timed(lambda q: lib.scores(q[None], "mean"))
        retrieval = timed(lambda q: lib.retrieve(q[None], 10))
        plain = timed(lambda q: straightforward_scores(q, in_ram, offsets))
        agree, worst = 0, 0.0
        for q in queries:
            (exp,) = lib.explain(q[None], top=5, retrieve=0)
            ref = straightforward_scores(q, in_ram, offsets)
            agree += [lib.class_names[j] for j in np.argsort(-ref, kind="stable")[:5]] == [c.name for c in exp.classes]
            worst = max(worst, float(np.max(np.abs(lib.scores(q[None], "mean")[0] - ref))))
        # recall@10 of the retrieval on these queries too (noisier than the build-time sample)
        from whyclip.store.vectors.retrieval import exact_search, recall

        got = np.array([[r.descriptor_id for r in hits] for hits in lib.retrieve(queries, 10)])
        bench_recall = recall(got, lib.ids[exact_search(in_ram, queries, 10)[1]])
        query_rss = query_process_rss(home, queries[:20])
        on_disk = folder_bytes(Path(home))
        results["query"].append({
            "descriptors": size, "classes": info.n_classes, "build_s": build, "load_s": load,
            "explain_p50_ms": pct(ours, 50), "explain_p95_ms": pct(ours, 95),
            "scores_p50_ms": pct(scores_only, 50), "scores_p95_ms": pct(scores_only, 95),
            "straightforward_p50_ms": pct(plain, 50), "straightforward_p95_ms": pct(plain, 95),
            "scores_speedup": statistics.median(plain) / statistics.median(scores_only),
            "top5_agreement": agree / len(queries), "max_abs_score_diff": worst,
            "retrieval_p50_ms": pct(retrieval, 50), "retrieval_p95_ms": pct(retrieval, 95),
            "index": info.index_factory, "index_params": info.index_params, "recall_at_10": info.recall_at_10,
            "bench_queries_recall_at_10": bench_recall,
            "bytes_per_descriptor_on_disk": on_disk / size, "query_process_rss_mb": query_rss,
            "query_process_rss_bytes_per_descriptor": query_rss * 2**20 / size,
        })  # fmt: skip
        print(f"query {size}: explain p50 {pct(ours, 50):.1f} ms, scores {pct(scores_only, 50):.2f} ms vs "
              f"straightforward {pct(plain, 50):.2f} ms", file=sys.stderr)  # fmt: skip


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
            results["images"].append({
                "precision": enc.precision, "batch": batch, "p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                "per_image_ms": pct(times, 50) / batch, "checked_cosine": enc.checked.get("image"),
            })  # fmt: skip


# -- report ---------------------------------------------------------------------------------


def index_note(r: dict) -> str:
    params = r.get("index_params") or {}
    return f" probe {params['probe']}" if "probe" in params else ""


def markdown(results: dict) -> str:
    out = [f"# whyclip benchmarks\n\n{results['machine']}\n"]
    if results["ingest"]:
        out.append("## Ingest (prompts/s; whyclip = `whyclip ingest` path, fresh cache)\n")
        out.append("| library | prompts | whyclip /s | same, no prefix sharing /s | plain ST fp32 /s | speedup vs plain "
                   "| prefix-sharing gain | tokens computed / plain | precision | cosine vs plain fp32, every prompt: min (mean) |")  # fmt: skip
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in results["ingest"]:
            tokens = f"{r['tokens_computed']:,} / {r['tokens_plain']:,}" if "tokens_plain" in r else "-"
            out.append(f"| {r['library']} | {r['prompts']:,} | {r['whyclip_per_s']:.0f} ({r['whyclip_s']:.1f} s) | "
                       f"{r['no_prefix_per_s']:.0f} ({r['no_prefix_s']:.1f} s) | {r['plain_per_s']:.0f} ({r['plain_s']:.1f} s) | "
                       f"{r['speedup']:.2f}x | {r['prefix_gain']:.2f}x | {tokens} | {r['precision']} | "
                       f"{r['min_cosine_vs_plain']:.5f} ({r['mean_cosine_vs_plain']:.6f}) |")  # fmt: skip
    if results["query"]:
        out.append("\n## Query (one image vector; ms)\n")
        out.append("| descriptors | classes | full explanation p50 / p95 | exact scores p50 / p95 | straightforward numpy p50 / p95 "
                   "| scores speedup | top-5 agree | max abs diff | top-10 retrieval p50 / p95 | index (recall@10 at build; on these queries) | build s | load s "
                   "| bytes/descriptor on disk | query process RSS MB (bytes/descriptor) |")  # fmt: skip
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        for r in results["query"]:
            out.append(
                f"| {r['descriptors']:,} | {r['classes']:,} | {r['explain_p50_ms']:.1f} / {r['explain_p95_ms']:.1f} | "
                f"{r['scores_p50_ms']:.2f} / {r['scores_p95_ms']:.2f} | {r['straightforward_p50_ms']:.2f} / "
                f"{r['straightforward_p95_ms']:.2f} | {r['scores_speedup']:.1f}x | {r['top5_agreement']:.0%} | "
                f"{r['max_abs_score_diff']:.1e} | {r['retrieval_p50_ms']:.2f} / {r['retrieval_p95_ms']:.2f} | "
                f"{r['index']}{index_note(r)} ({r['recall_at_10']:.3f}; {r['bench_queries_recall_at_10']:.3f}) | {r['build_s']:.1f} | "
                f"{r['load_s']:.2f} | {r['bytes_per_descriptor_on_disk']:.0f} | "
                f"{r['query_process_rss_mb']:.0f} ({r['query_process_rss_bytes_per_descriptor']:.0f}) |"
            )
    if results["images"]:
        out.append("\n## Image encoding (ms)\n")
        out.append("| precision | batch | p50 | p95 | per image | min cosine vs fp32 |\n|---|---:|---:|---:|---:|---|")
        for r in results["images"]:
            cos = f"{r['checked_cosine']:.5f}" if r["checked_cosine"] else "-"
            out.append(f"| {r['precision']} | {r['batch']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['per_image_ms']:.1f} | {cos} |")
    return "\n".join(out) + "\n"


# -- whole processes (bench/speed.py) ---------------------------------------------------------


def run_speed_sections(args, skip: set[str], results: dict) -> None:
    """Cold start, the seven files as whole processes, images at the encoder's pace."""
    if not args.model:
        return
    import speed  # bench/speed.py, beside this file

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
    ap.add_argument("--sizes", default="10000,100000,1000000", help="query benchmark library sizes")
    ap.add_argument("--synthetic-ingest", type=int, default=100_000, help="descriptors in the synthetic ingest library (0: skip)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: ingest, query, images, cold, ingest-processes, image-pace")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs of each whole process (cold start; ingest: half)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from importlib.metadata import version

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
                                f"torch {version('torch')}, faiss {version('faiss-cpu')}, numpy {np.__version__}",
                     "ingest": [], "query": [], "images": []}  # fmt: skip
    # The query section runs first, before torch is imported: torch's OpenMP threads slow
    # numpy's BLAS in the same process, which would flatter whyclip against the baseline.
    if "query" not in skip:
        for size in map(int, args.sizes.split(",")):
            bench_query(size, args.runs, results)
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
    import speed

    table = markdown(results) + "\n".join(speed.markdown(results)) + "\n"
    (out / "bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
