"""Dashboard latency: how long the Explain page takes for a *new* image once the library
and the model are cached, against the image encoding alone.

Usage: python bench/dashboard_latency.py --library NAME [--home DIR] [--runs 10]

Drives the real page with Streamlit's AppTest (no browser: it measures the server-side
script run, which is what the cache work changes). For each run a fresh image is uploaded,
so its vector is not cached; the page's own caption reports the encode time.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

APP = str(Path(__file__).resolve().parents[1] / "ui" / "dashboard" / "streamlit_app.py")


def random_png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", required=True)
    ap.add_argument("--home", default=None)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    if args.home:
        os.environ["WHYCLIP_HOME"] = args.home
    os.environ["WHYCLIP_UI_LIBRARY"] = args.library
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600).run()  # loads library, model, draws a sample
    assert not at.exception, at.exception
    page, encode = [], []
    for seed in range(args.runs + 1):
        uploader = at.file_uploader[0].set_value([(f"bench-{seed}.png", random_png(seed), "image/png")])
        t = time.perf_counter()
        uploader.run()
        elapsed = time.perf_counter() - t
        assert not at.exception, at.exception
        caption = next(c.value for c in at.caption if c.value.startswith("image encoded in"))
        enc_ms, _exp_ms = map(int, re.findall(r"(\d+) ms", caption)[:2])
        if seed:  # the first upload warms the upload path
            page.append(elapsed * 1000)
            encode.append(enc_ms)
    over = [p - e for p, e in zip(page, encode, strict=True)]
    print(f"library {args.library}: {args.runs} new images, each a full rerun of the Explain page")
    print("| measure | median ms | max ms |\n|---|---:|---:|")
    for name, xs in (
        ("page rerun, new image", page),
        ("image encode (in the page)", encode),
        ("page rerun minus encode", over),
    ):
        print(f"| {name} | {statistics.median(xs):.0f} | {max(xs):.0f} |")


if __name__ == "__main__":
    main()
