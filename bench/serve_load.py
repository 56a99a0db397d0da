"""Load on ``whyclip serve`` (loopback only, bounded in requests and time).

Two replicas share one data directory: A serves N concurrent clients explaining one image
per request; B runs an ingest job of a new version of the same library, is SIGKILLed
mid-job, restarted, and the job resubmitted. Two phases of the same load: "steady" (nothing
else on the cores: the throughput and latency targets) and "under_ingest" (while B ingests,
is killed and the job resubmitted: errors and mixed-version answers). Reported: errors
(target 0), mixed-version answers (target 0: an answer holding a descriptor of another
version than the one it names, or a client seeing an older version after a newer one),
p50/p99 latency, one request alone against one bare image encode, and explanations/s against
the model's bare batch-32 image encode throughput measured first in this run.

    python bench/serve_load.py --model models/vitb32 --clients 16 --requests 400
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import numpy as np
from PIL import Image

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(home: str, model: str, bound_s: float):
    port = free_port()
    env = {**os.environ, "WHYCLIP_API_KEYS": KEY, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "whyclip.ui.cli.main",
        "--home",
        home,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        model,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers={"X-API-Key": KEY})
    try:
        deadline = time.monotonic() + bound_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}) before it was ready")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not get ready in time")
            time.sleep(0.2)
        yield proc, client
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()


def library(classes: int, per_class: int, tag: str) -> bytes:
    return json.dumps(
        {f"class {c}": [f"{tag} descriptor {d} of class {c}" for d in range(per_class)] for c in range(classes)}
    ).encode()


def submit(client, data: bytes, commit_every: int = 256) -> str:
    r = client.post(
        "/v1/libraries", files={"file": ("lib.json", data)}, data={"name": "load", "commit_every": str(commit_every)}
    )
    r.raise_for_status()
    return r.json()["id"]


def wait(client, job_id: str, bound_s: float) -> dict:
    deadline = time.monotonic() + bound_s
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish in time: {job}")
        time.sleep(0.2)
    return job


def images(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def ceiling(model: str, pictures: list[bytes], rounds: int) -> float:
    """Images/s of the bare encoder on batches of 32 (decoded images, no HTTP, no scoring)."""
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(model)
    batch = [Image.open(io.BytesIO(pictures[i % len(pictures)])).convert("RGB") for i in range(32)]
    enc.embed_images(batch)  # warm-up (and the precision check)
    t = time.perf_counter()
    for _ in range(rounds):
        enc.embed_images(batch)
    return 32 * rounds / (time.perf_counter() - t)


def mixed(e: dict) -> bool:
    """An answer mixing versions: a descriptor (or retrieved hit) whose text belongs to
    another version than the one the answer names (v1 and v2 texts differ by their tag)."""
    tag = f"v{e['version']} "
    texts = [d["descriptor"] for c in e["classes"] for d in c["descriptors"]] + [
        r["descriptor"] for r in e["retrieved"]
    ]
    return any(not t.startswith(tag) for t in texts)


def load(base_url: str, pictures: list[bytes], clients: int, requests: int, max_s: float, during=None) -> dict:
    """``clients`` threads send ``requests`` explain requests in all (one image each);
    ``during`` (a function) runs in this thread meanwhile. Latency percentiles, answers/s over
    the clients' span, errors, mixed-version answers (by content, and a client seeing an older
    version after a newer one)."""
    stats: dict[str, Any] = {"latency": [], "errors": 0, "mixed": 0, "versions": set(), "done": 0, "end": None}
    lock, stop_at = threading.Lock(), time.monotonic() + max_s
    counter = iter(range(requests))

    def client() -> None:
        seen = 0
        with httpx.Client(base_url=base_url, timeout=60) as c:
            for n in counter:
                if time.monotonic() > stop_at:
                    return
                t = time.perf_counter()
                try:
                    r = c.post(
                        "/v1/explain",
                        files={"image": (f"{n}.png", pictures[n % len(pictures)])},
                        data={"library": "load", "retrieve": "10"},
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    stats["latency"].append(dt)
                    if not ok:
                        stats["errors"] += 1
                        continue
                    e = r.json()["explanations"][0]
                    stats["versions"].add(e["version"])
                    if e["version"] < seen or mixed(e):
                        stats["mixed"] += 1
                    seen = max(seen, e["version"])
                    stats["done"] += 1
                    stats["end"] = time.perf_counter()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    extra = during() if during else None
    for t in threads:
        t.join()
    lat = np.array(stats["latency"]) * 1000
    out = {
        "requests": len(lat),
        "errors": stats["errors"],
        "mixed_version_answers": stats["mixed"],
        "versions_seen": sorted(stats["versions"]),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "explanations_per_s": stats["done"] / ((stats["end"] or time.perf_counter()) - started),
    }
    if extra is not None:
        out.update(extra)
    return out


def ceiling_one(model: str, pictures: list[bytes], rounds: int = 7) -> float:
    """Images/s of the bare encoder on one decoded image at a time (the median round)."""
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(model)
    one = [Image.open(io.BytesIO(pictures[0])).convert("RGB")]
    enc.embed_images(one)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        enc.embed_images(one)
        times.append(time.perf_counter() - t)
    return 1 / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="CLIP folder (the full-size random ViT-B/32 for the real figures)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent explaining clients")
    ap.add_argument("--requests", type=int, default=400, help="explain requests in each phase (the bound)")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop a phase's load after this long")
    ap.add_argument("--classes", type=int, default=200, help="classes of the library (v1 and v2)")
    ap.add_argument("--per-class", type=int, default=10, help="descriptors per class of v2 (v1 has 5)")
    ap.add_argument("--ceiling-rounds", type=int, default=5, help="batch-32 encodes timed for the ceiling")
    args = ap.parse_args()
    pictures = images(8)
    result: dict = {
        "clients": args.clients,
        "model": args.model,
        "ceiling_images_per_s": ceiling(args.model, pictures, args.ceiling_rounds),
    }
    with tempfile.TemporaryDirectory() as home, ExitStack() as stack:
        _, a = stack.enter_context(serve(home, args.model, 300))
        assert wait(a, submit(a, library(args.classes, 5, "v1")), 600)["state"] == "done"
        files = {"image": ("x.png", pictures[0])}
        alone = []
        for _ in range(7):
            t = time.perf_counter()
            a.post("/v1/explain", files=files, data={"library": "load", "retrieve": "10"}).raise_for_status()
            alone.append(time.perf_counter() - t)
        result["one_request_alone_ms"] = float(np.median(alone[2:])) * 1000
        result["one_image_encode_ms"] = 1000 / ceiling_one(args.model, pictures)
        # Steady: the throughput and latency targets, nothing else using the cores.
        result["steady"] = load(str(a.base_url), pictures, args.clients, args.requests, args.max_seconds)
        result["steady"]["ratio_to_ceiling"] = result["steady"]["explanations_per_s"] / result["ceiling_images_per_s"]

        def ingest_killed_and_resubmitted() -> dict:
            out = {}
            v2 = library(args.classes, args.per_class, "v2")
            with serve(home, args.model, 300) as (proc_b, b):  # replica B: the ingest, killed mid-job
                job = submit(b, v2)
                while (p := b.get(f"/v1/jobs/{job}").json())["progress"]["done"] < 256 and p["state"] == "running":
                    time.sleep(0.05)
                proc_b.send_signal(signal.SIGKILL)
                out["killed_at"] = p["progress"]
            with serve(home, args.model, 300) as (_, b):
                done = wait(b, submit(b, v2), 900)
                out["resubmitted"] = (
                    {k: done["result"][k] for k in ("version", "n_embedded", "n_reused")} if done["result"] else done
                )
            return out

        # Faults: the same load while replica B ingests v2, is SIGKILLed and resubmitted
        # (B's ingest shares the two cores, so this phase's throughput is not the target's).
        result["under_ingest"] = load(
            str(a.base_url), pictures, args.clients, args.requests, args.max_seconds, ingest_killed_and_resubmitted
        )
    s = result["steady"]
    result["targets"] = {
        "ratio_to_ceiling>=0.7": s["ratio_to_ceiling"] >= 0.7,
        "p99<=1000ms": s["p99_ms"] is not None and s["p99_ms"] <= 1000,
        "alone<=encode+15ms": result["one_request_alone_ms"] <= result["one_image_encode_ms"] + 15,
        "errors==0": s["errors"] == 0 and result["under_ingest"]["errors"] == 0,
        "mixed==0": s["mixed_version_answers"] == 0 and result["under_ingest"]["mixed_version_answers"] == 0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
