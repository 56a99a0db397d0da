"""What a where-in-the-image map costs per image (issue 22), side by side in one run.

Usage: python bench/maps_cost.py [--runs 5] [--layers 4] [--grid 7] [--threads N]

On a ViT-B/32-shaped image tower (hidden 768, 12 layers, 12 heads, 224 px, 32 px patches,
projection 512) with random weights, since timing does not depend on the weights and no
full-size weights can be downloaded here: the plain forward pass of one image (what
explain pays), the decomposition (the same pass keeping the class token's attention terms
of the last ``--layers`` layers per patch, ingest/encoder/decompose.py), and the occlusion
check (``--grid`` x ``--grid`` masked copies encoded in one batch). Median seconds of
``--runs`` each, the ratios to the plain pass, and each one's peak resident memory over the
process's once the tower is built (a fresh process per way, so one's peak cannot hide
another's).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VIT_B32 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": 512,
    "hidden_act": "quick_gelu",
}


def one(way: str, runs: int, layers: int, grid: int, threads: int | None) -> dict:
    """Time one way in this process; its peak RSS growth from just before its first run."""
    import numpy as np
    import torch

    from whyclip.ingest.encoder.decompose import decompose, occlusion
    from whyclip.ingest.encoder.vision import VisionTower

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    tower = VisionTower(dict(VIT_B32)).eval()
    pixels = torch.randn(1, 3, 224, 224)
    texts = np.random.default_rng(0).standard_normal((20, 512))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    work = {
        "plain": lambda: tower(pixels),
        "decomposition": lambda: decompose(tower, pixels, layers).scores(texts, 100.0),
        "occlusion": lambda: occlusion(tower, pixels, texts, 100.0, grid=grid),
    }[way]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the tower and inputs are built
    with torch.no_grad():
        work()  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            work()
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"way": way, "median_s": statistics.median(times), "peak_rss_growth_mb": (peak - before) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--grid", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's way
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.runs, args.layers, args.grid, args.threads)))
        return
    rows = []
    for way in ("plain", "decomposition", "occlusion"):
        cmd = [sys.executable, __file__, "--one", way, "--runs", str(args.runs)]
        cmd += ["--layers", str(args.layers), "--grid", str(args.grid)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    base = rows[0]["median_s"]
    print(
        f"ViT-B/32-shaped tower, one 224 px image, median of {args.runs} "
        f"(last {args.layers} layers, {args.grid}x{args.grid} grid, 20 descriptors)"
    )
    print(f"{'way':<14} {'seconds':>8} {'x plain':>8} {'peak RSS growth (MB)':>21}")
    for r in rows:
        print(f"{r['way']:<14} {r['median_s']:8.3f} {r['median_s'] / base:8.2f} {r['peak_rss_growth_mb']:21.1f}")


if __name__ == "__main__":
    main()
