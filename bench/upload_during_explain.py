"""Explain throughput of ``whyclip serve`` while a large library is uploaded, against idle
(loopback only, bounded in time).

One server on a tiny random-weight model (``whyclip make-test-model``, or ``--model``).
``--clients`` clients explain one image per request against a small library, first with
nothing else running (idle), then while a library of ``--descriptors`` descriptors in
``--classes`` classes is uploaded. Reported, in requests/s and as a ratio to idle (target
0.8 or more while the upload is read and validated):

- ``validating``: from the POST until the job has read and validated the file (its
  progress total is known: the prompts are built and the embedding starts);
- ``whole_job``: from the POST until the job is done (embedding the new prompts included,
  which shares the cores with the clients' image encodes).

    python bench/upload_during_explain.py                       # 100,000 descriptors in one class
    python bench/upload_during_explain.py --descriptors 20000 --clients 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_load import images, serve, wait  # noqa: E402


def big_library(descriptors: int, classes: int) -> bytes:
    per = -(-descriptors // classes)
    return json.dumps(
        {f"class {c}": [f"upload descriptor {d} of class {c}" for d in range(per)] for c in range(classes)}
    ).encode()


class Clients:
    """``n`` threads explaining one image a request until stopped; completion times kept."""

    def __init__(self, client, n: int, picture: bytes):
        self.done: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(client, picture)) for _ in range(n)]

    def _loop(self, client, picture: bytes) -> None:
        while not self._stop.is_set():
            r = client.post("/v1/explain", files={"image": ("x.png", picture)}, data={"library": "small"})
            with self._lock:
                if r.status_code == 200:
                    self.done.append(time.monotonic())
                else:
                    self.errors += 1

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def rate(self, start: float, end: float) -> float:
        with self._lock:
            n = sum(start <= t < end for t in self.done)
        return n / max(end - start, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model folder [default: a tiny random-weight one, built here]")
    ap.add_argument("--descriptors", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=1)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--idle-s", type=float, default=15.0)
    ap.add_argument("--bound-s", type=float, default=900.0, help="give up after this long")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="whyclip-bench-") as tmp:
        model = args.model or str(Path(tmp) / "tiny")
        if not args.model:
            subprocess.run([sys.executable, "-m", "whyclip.ui.cli.main", "make-test-model", model], check=True)
        with serve(str(Path(tmp) / "home"), model, bound_s=300) as (_proc, client):
            small = json.dumps({f"class {c}": [f"small {d} of {c}" for d in range(5)] for c in range(10)}).encode()
            r = client.post("/v1/libraries", files={"file": ("small.json", small)}, data={"name": "small"})
            r.raise_for_status()
            wait(client, r.json()["id"], args.bound_s)
            data = big_library(args.descriptors, args.classes)
            (picture,) = images(1)
            with Clients(client, args.clients, picture) as clients:
                time.sleep(2)  # warm-up
                t_idle = time.monotonic()
                time.sleep(args.idle_s)
                idle = clients.rate(t_idle, time.monotonic())
                t0 = time.monotonic()
                r = client.post("/v1/libraries", files={"file": ("big.json", data)}, data={"name": "big"})
                r.raise_for_status()
                accepted = time.monotonic() - t0
                job_id, validated, deadline = r.json()["id"], None, t0 + args.bound_s
                while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
                    if validated is None and job["progress"]["total"] > 0:
                        validated = time.monotonic()
                    if time.monotonic() > deadline:
                        raise SystemExit(f"job {job_id} did not finish in time: {job}")
                    time.sleep(0.05)
                finished = time.monotonic()
                validated = validated or finished
                during_validation = clients.rate(t0, validated)
                whole = clients.rate(t0, finished)
            if job["state"] != "done":
                raise SystemExit(f"the upload failed: {job['error']}")
    out = {
        "descriptors": args.descriptors,
        "classes": args.classes,
        "clients": args.clients,
        "upload_202_s": round(accepted, 3),
        "idle_rps": round(idle, 2),
        "validating": {"seconds": round(validated - t0, 2), "rps": round(during_validation, 2)},
        "whole_job": {"seconds": round(finished - t0, 2), "rps": round(whole, 2)},
        "ratio_validating": round(during_validation / idle, 2),
        "ratio_whole_job": round(whole / idle, 2),
        "errors": clients.errors,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
