"""Local against Ray on one machine (issue 23): whole ``whyclip ingest`` and ``whyclip eval``
processes with and without ``--ray`` (a local cluster started and stopped by the command),
interleaved, each in a fresh store, medians; then Ray's fixed costs, stage by stage, in
one process.

    python bench/ray_cost.py --model DIR [--files FILE...] [--images 256] [--repeats 3]

Without ``--files`` the paper's seven descriptor files are used where ``../shared`` holds
them, else a synthetic library of 1,000 classes. On one machine Ray can only add cost: its
actors run the same code on the same cores, so expect about 1x plus the fixed costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "descriptors"
sys.path.insert(0, str(ROOT))
WHYCLIP = [sys.executable, "-m", "whyclip.ui.cli.main"]


def synthetic_library(folder: Path, n_classes: int = 1000) -> list[Path]:
    shared = ["green", "has wings", "a long tail", "found near water", "striped fur", "a round shape"]
    lib = {
        f"class {i}": [f"feature {j} of the class {i}" for j in range(i % 9 + 2)] + shared[: i % 6]
        for i in range(n_classes)
    }
    path = folder / "synthetic.json"
    path.write_text(json.dumps(lib))
    return [path]


def dataset(folder: Path, n: int) -> tuple[Path, Path]:
    """``n`` random pictures of 320x240 in three class folders, and a library of those classes."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for k in range(n):
        c = folder / "ds" / f"class {k % 3}"
        c.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(c / f"{k}.jpg", quality=90)
    lib = folder / "three.json"
    lib.write_text(json.dumps({f"class {i}": ["green", "a long tail"] for i in range(3)}))
    return folder / "ds", lib


def timed(args: list[str], home: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [*WHYCLIP, "--home", str(home), *args], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # eval exits 1 when it skipped an image
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds


def whole_processes(model: str, files: list[Path], images: int, repeats: int, precision: str, work: Path) -> dict:
    ds, three = dataset(work, images)
    common = ["--model", model, "--precision", precision]
    ways: dict[str, list[float]] = {"ingest local": [], "ingest --ray": [], "eval local": [], "eval --ray": []}
    for r in range(repeats):
        for ray in ((), ("--ray",)) if r % 2 == 0 else (("--ray",), ()):
            home = work / f"home-{r}-{bool(ray)}"
            way = "--ray" if ray else "local"
            ways[f"ingest {way}"].append(timed(["ingest", *map(str, files), *common, *ray], home))
            eval_home = work / f"eval-{r}-{bool(ray)}"
            timed(["ingest", str(three), *common], eval_home)
            ways[f"eval {way}"].append(timed(["eval", str(ds), "--library", "three", *common, *ray], eval_home))
    return {k: statistics.median(v) for k, v in ways.items()}


def fixed_costs(model: str, precision: str, work: Path) -> dict[str, float]:
    """Ray's stages for a one-chunk ingest, in this process."""
    t = time.perf_counter()
    import ray  # noqa: F401

    stages = {"import ray": time.perf_counter() - t}
    from whyclip.ingest.cluster import ClusterEncoder
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.services.library_ingest import plan_ingest, run_ingest
    from whyclip.store import Store

    store = Store.open(work / "fixed")
    local = load_encoder(model, precision=precision)
    plan = plan_ingest({"frog": ["green", "protruding eyes"]}, "fixed", local)
    remote = ClusterEncoder(local)
    first: list[float] = []
    t = time.perf_counter()
    run_ingest(store, plan, remote, progress=lambda done, total: first.append(time.perf_counter()))
    total = time.perf_counter() - t
    stages["start a local cluster (ray.init)"] = remote.cluster.seconds["connect"]
    stages["probe: an actor loads the model and settles the precision"] = remote.cluster.seconds["probe"]
    stages["encoder pool: start, load, first chunk back"] = first[-1] - t - sum(remote.cluster.seconds.values())
    stages["the ingest with all of the above"] = total
    t = time.perf_counter()
    remote.close()
    stages["stop the cluster (ray.shutdown)"] = time.perf_counter() - t
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a CLIP folder (whyclip make-test-model DIR [--full-size])")
    parser.add_argument("--files", nargs="*", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="whyclip-ray-bench-") as tmp:
        work = Path(tmp)
        files = args.files or (sorted(SHARED.glob("*.json")) if SHARED.is_dir() else synthetic_library(work))
        model = str(Path(args.model).resolve())
        print(f"model {model}, {len(files)} file(s), {args.images} images, precision {args.precision}")
        print(f"{os.cpu_count()} CPUs")
        times = whole_processes(model, files, args.images, args.repeats, args.precision, work)
        for job in ("ingest", "eval"):
            local, ray = times[f"{job} local"], times[f"{job} --ray"]
            print(f"{job:6s}  local {local:7.2f} s   --ray {ray:7.2f} s   ray/local {ray / local:5.2f}x")
        print("Ray's fixed costs (one-chunk ingest, in process):")
        for stage, seconds in fixed_costs(model, args.precision, work).items():
            print(f"  {stage:58s} {seconds:6.2f} s")
        print("(whole processes: medians of interleaved repeats, each in a fresh store)")


if __name__ == "__main__":
    main()
