"""Throughput of `whyclip eval` (images/s), first run (every image embedded) and a rerun
(every image from the cache), through the real command in fresh processes.

Usage:
  python bench/eval_throughput.py --library imagenet --home DIR [--images 256]

The library must exist in --home; its own model is used. The dataset is made
here: --images JPEG photos-sized (500x375) pictures of smooth random colour fields, spread
over the library's first classes in ImageFolder layout. Reports wall time of the whole
process (model load included) and the rate `whyclip eval` itself prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_dataset(folder: Path, classes: list[str], n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = folder / classes[i % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)  # upscaled: photo-like, compressible
        Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)


def run_eval(home: str, data: Path, library: str, name: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "whyclip.ui.cli.main",
            "--home",
            home,
            "eval",
            str(data),
            "-l",
            library,
            "--name",
            name,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr.strip().splitlines()[-1])
    return wall, json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument(
        "--seed", type=int, default=int(time.time()), help="pictures differ per seed (the image cache would hit)"
    )
    args = ap.parse_args()
    from whyclip.store import Store

    lib = Store.open(args.home, create=False).load(args.library)
    stamp = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_dataset(data, lib.class_names[:50], args.images, args.seed)
        rows: list[tuple[Any, ...]] = []
        for label in ("first run (embeds every image)", "rerun (images from the cache)"):
            wall, out = run_eval(args.home, data, args.library, f"bench-{stamp}-{len(rows)}")
            rows.append(
                (label, out["run"]["n_images"], wall, out["images_per_second"], out["embedded"], out["timings"])
            )
    print(
        f"whyclip eval, {args.images} JPEG images 500x375, library {args.library} ({len(lib.class_names)} classes, "
        f"{lib.info.n_descriptors} descriptors), model {lib.info.encoder_name}\n"
    )
    print("| run | images | embedded | images s | images/s | control s | scoring s | process wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, wall, rate, embedded, tm in rows:
        print(
            f"| {label} | {n} | {embedded} | {tm['images']:.1f} | {rate:.1f} | {tm['control']:.1f} | "
            f"{tm['scoring']:.1f} | {wall:.1f} |"
        )


if __name__ == "__main__":
    main()
