"""Explain latency of one image, in process and end to end through the CLI.

Usage: python bench/explain_latency.py --model DIR --library NAME [--home DIR] [--runs 20]

Reports p50/p95 of: image encode (one image), store explain (exact scores for every class,
evidence for the top 5, contrast, library-wide top 10), and both together; plus model load
time and the wall time of a whole `whyclip explain` process (start-up included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--library", required=True)
    ap.add_argument("--home", default=None)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    from whyclip.ingest import load_encoder, read_images
    from whyclip.store import Store

    store = Store.open(args.home, create=False)
    t = time.perf_counter()
    lib = store.load(args.library)
    load_lib = time.perf_counter() - t
    t = time.perf_counter()
    enc = load_encoder(args.model)
    load_model = time.perf_counter() - t
    lib.check_encoder(enc.info.id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
        image = read_images([path])
        enc.embed_images(image)  # warm-up
        lib.explain(enc.embed_images(image)[0])
        encode, explain = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            vec, _ = enc.embed_images(image)
            t1 = time.perf_counter()
            lib.explain(vec)
            t2 = time.perf_counter()
            encode.append(t1 - t0)
            explain.append(t2 - t1)
        total = [a + b for a, b in zip(encode, explain, strict=True)]
        cli = [sys.executable, "-m", "whyclip.ui.cli.main"] + (["--home", args.home] if args.home else [])
        cli += ["explain", str(path), "--library", args.library, "--model", args.model, "--json"]
        t = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        cli_wall = time.perf_counter() - t
    i = lib.info
    print(
        f"library {i.name} v{i.version}: {i.n_classes} classes, {i.n_descriptors} descriptors, dim {i.dim}; "
        f"model {args.model} on {enc.device}, {enc.precision} (checked: {enc.checked}); {args.runs} runs"
    )
    print("| step | p50 ms | p95 ms |\n|---|---:|---:|")
    for name, xs in (
        ("image encode (1 image)", encode),
        ("explain (scores, evidence, contrast, top-10)", explain),
        ("image to full explanation", total),
    ):
        print(f"| {name} | {pct(xs, 50):.1f} | {pct(xs, 95):.1f} |")
    print(
        f"\nlibrary load {load_lib * 1000:.0f} ms, model load {load_model:.2f} s, "
        f"`whyclip explain` process wall time {cli_wall:.2f} s (median encode "
        f"{statistics.median(encode) * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
