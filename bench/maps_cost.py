"""What a where-in-the-image map costs per image (issue 22), side by side in one run.

Usage: python bench/maps_cost.py [--runs 5] [--layers 4] [--grid 7] [--threads N]
       python bench/maps_cost.py --model DIR [--runs 5]     # whole explanations through the core

With ``--model`` (a ViT-B/32-shaped random CLIP folder: ``whyclip make-test-model DIR
--full-size --vocab VOCAB``), whole explanations of one 640 x 480 picture through the core
every surface calls (``Workspace.explain``, fp32, top 5 of a 50-class library of 5
descriptors each): plain, with exact maps, with the dense map too, with the occlusion check,
and the command line's drawing of one image's maps (a PNG each, ``MapsWriter``); timed
interleaved in one process (each run takes every way once), memory in a fresh process each.

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
        seconds = median_seconds(work, runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"way": way, "median_s": seconds, "peak_rss_growth_mb": (peak - before) / 1024}


def median_seconds(work, runs: int) -> float:
    """The median wall time of ``runs`` calls of ``work``."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


WAYS = [
    "explain",
    "explain + exact maps",
    "explain + exact + dense maps",
    "explain + exact maps + occlusion",
    "draw one image's maps (PNGs)",
]


def explain_ways(model: str, home: str) -> dict:
    """Each way of explaining one picture through the core, as a callable, in this process
    (the model loaded and one image encoded first, so what follows is the way's own cost)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    import whyclip
    from whyclip.ui.render.maps import MapsWriter

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    wc = whyclip.open(home, precision="fp32")
    encoder = wc.encoder(model)
    encoder.map_model()  # the image tower, which plain explain needs too
    encoder.embed_images([picture])  # (and its one-time precision check)
    mm = encoder.map_model()
    choices: dict[str, bool | whyclip.MapOptions] = {
        "explain": False,
        "explain + exact maps": True,
        "explain + exact + dense maps": whyclip.MapOptions(dense=True),
        "explain + exact maps + occlusion": whyclip.MapOptions(check="occlusion"),
    }

    def explain(maps):
        return lambda: wc.explain([picture], library="bench", model=model, top=5, maps=maps)

    mapped: list = []

    def draw():
        if not mapped:
            mapped.extend(explain(True)())
        with tempfile.TemporaryDirectory() as out:
            writer = MapsWriter(Path(out) / "maps")
            writer.add(mapped[0], mm.view(mm.pixels(picture)))
            writer.finish()
        return mapped

    return {**{way: explain(maps) for way, maps in choices.items()}, "draw one image's maps (PNGs)": draw}


def explain_memory(way: str, model: str, home: str) -> dict:
    """One way's peak memory, in a fresh process: the process's peak RSS during one call of
    the way (after a first call) and its growth over the RSS just before."""
    work = explain_ways(model, home)[way]
    work()  # once, so what stays (caches, a tower) is in the baseline
    from pathlib import Path

    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here (Linux)
    before = _status_kb("VmRSS")
    done = work()
    peak = _status_kb("VmHWM")
    n = len(done[0].maps.maps) if done and done[0].maps else 0
    return {"peak_rss_mb": peak / 1024, "peak_rss_growth_mb": (peak - before) / 1024, "maps": n}


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB."""
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def whole(args) -> None:
    """Whole explanations side by side: timed interleaved in this process (each run takes
    every way once, so a burst of load on the machine falls on all of them), memory in a fresh
    process per way."""
    import tempfile
    from pathlib import Path

    import whyclip

    home = tempfile.mkdtemp(prefix="maps-bench-")
    lib = Path(home) / "lib.json"
    lib.write_text(json.dumps({f"class {i}": [f"feature {i} {j}" for j in range(5)] for i in range(50)}))
    with whyclip.open(home, precision="fp32") as wc:
        wc.ingest(lib, library="bench", model=args.model)
    memory = {}
    for way in WAYS:
        cmd = [sys.executable, __file__, "--one", way, "--model", args.model, "--home", home]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        memory[way] = json.loads(out.splitlines()[-1])
    ways = explain_ways(args.model, home)
    for work in ways.values():
        work()  # warm-up
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.runs):
        for way in WAYS:
            t = time.perf_counter()
            ways[way]()
            times[way].append(time.perf_counter() - t)
    base = statistics.median(times["explain"])
    print(f"one 640x480 picture explained whole, {args.model}, fp32, top 5, median of {args.runs} interleaved")
    print(f"{'way':<34} {'seconds':>8} {'x explain':>9} {'maps':>5} {'peak RSS (MB)':>14} {'growth':>7}")
    for way in WAYS:
        m, sec = memory[way], statistics.median(times[way])
        print(
            f"{way:<34} {sec:8.3f} {sec / base:9.2f} {m['maps']:5d} {m['peak_rss_mb']:14.0f} "
            f"{m['peak_rss_growth_mb']:7.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--grid", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="a CLIP folder: whole explanations through the core")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's way
    ap.add_argument("--home", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one and args.model:
        print(json.dumps(explain_memory(args.one, args.model, args.home)))
        return
    if args.model:
        return whole(args)
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
