"""The store at scale: what writing N descriptor vectors through the real writer
(``Store.write_library``) costs, per stage, on SQLite and on PostgreSQL.

    python bench/store_scale.py --n 1000000,10000000 --db sqlite,postgres

For each N (``--per-class`` descriptors a class, dimension ``--dim``) the synthetic vectors
are generated once, with CLIP's text geometry (:mod:`bench.synthetic`: unit vectors in one
narrow cone, concepts shared across classes), in chunks into a ``.npy`` file on disk, so
the generator never holds them in memory. Each database then gets a fresh process that
builds the draft (its Python objects: classes, prompts, the prompt -> row map) with that
file memory-mapped read-only as ``draft.vectors``, as ``whyclip ingest`` hands it over,
writes it, and loads it back. Per stage: seconds, peak memory, the sizes on disk (the
vector files, the class baselines, the retrieval index ``choose_factory`` picks, the
database) and the row insert rate. Big files are removed after each run.

Memory is measured two ways, both reset at every stage: ``peak_anon_mb``, the largest
anonymous resident memory (``RssAnon``, sampled every 10 ms: what the process itself
allocates), and ``vm_hwm_mb``, the kernel's high-water mark of the whole resident set
(``VmHWM``, reset through ``/proc/self/clear_refs``), which also counts the pages of
memory-mapped files the process touched: page cache the kernel can drop, not a
requirement. PostgreSQL runs on a throwaway cluster (``tests/helpers/pg.py``: loopback,
``fsync=off``), so its insert rate is an upper bound for a durable server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_CONCEPTS = 200_000  # the visual-concept vocabulary (bench.synthetic's default at 1M descriptors)
CHUNK = 1 << 15


# -- memory ------------------------------------------------------------------------------


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Memory:
    """Peak anonymous RSS (sampled) and VmHWM, since the last :meth:`reset`."""

    def __init__(self, every_s: float = 0.01):
        self.every_s = every_s
        self.peak_anon = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            anon = _status("RssAnon")
            with self._lock:
                self.peak_anon = max(self.peak_anon, anon)

    def reset(self) -> dict[str, float]:
        """The peaks since the last reset (MB), then start again from now."""
        anon_now = _status("RssAnon")
        with self._lock:
            peak = max(self.peak_anon, anon_now)
            self.peak_anon = anon_now
        out = {"peak_anon_mb": round(peak / 1024, 1), "vm_hwm_mb": round(_status("VmHWM") / 1024, 1)}
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return out

    def stop(self) -> None:
        self._stop.set()


# -- the synthetic library -----------------------------------------------------------------


def generate(n: int, per_class: int, dim: int, work: Path) -> dict[str, Any]:
    """``work/vectors.npy``: the (n + classes, dim) fp32 unit vectors, the descriptors in
    class-major order then one baseline a class (its descriptors' normalised mean), written
    in chunks; ``work/concepts.npy``: each descriptor's concept id."""
    from bench.synthetic import clip_shaped

    n_classes = n // per_class
    n = n_classes * per_class
    out = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32, shape=(n + n_classes, dim))
    lib = clip_shaped(
        n_classes, per_class, dim, n_concepts=min(MAX_CONCEPTS, max(per_class * 2, n // 5)), seed=0, out=out[:n]
    )
    for lo in range(0, n_classes, CHUNK):
        hi = min(n_classes, lo + CHUNK)
        means = np.asarray(out[lo * per_class : hi * per_class], dtype=np.float64)
        means = means.reshape(hi - lo, per_class, dim).mean(axis=1)
        out[n + lo : n + hi] = (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
    out.flush()
    np.save(work / "concepts.npy", lib.concepts.astype(np.int32))
    # the geometry, measured on a sample (bench.synthetic.statistics needs the whole library object)
    rng = np.random.default_rng(1)
    sample = np.asarray(out[np.sort(rng.choice(n, size=min(n, 2000), replace=False))])
    centre = sample.mean(axis=0)
    centre /= np.linalg.norm(centre)
    g = sample @ sample.T
    pairwise = float((g.sum() - np.trace(g)) / (len(g) * (len(g) - 1)))
    del out
    return {
        "n_descriptors": n,
        "n_classes": n_classes,
        "text_pairwise_cosine": round(pairwise, 3),
        "cosine_to_mean": round(float((sample @ centre).mean()), 3),
    }


def build_draft(work: Path, per_class: int, dim: int):
    """The :class:`LibraryDraft` of the generated library, its vectors memory-mapped
    read-only. Prompts are written as the paper's template writes them; the first
    descriptor of a class names its concept (so popular concepts are shared across
    classes, Zipf-distributed), the others are the class's own."""
    from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft

    vectors = np.load(work / "vectors.npy", mmap_mode="r")
    concepts = np.load(work / "concepts.npy")
    n_classes = len(concepts)
    n = n_classes * per_class
    classes = []
    rows: dict[str, int] = {}
    for c in range(n_classes):
        name = f"class {c}"
        texts = [f"has visual concept {concepts[c, 0]}"] + [
            f"its own feature {j} of {name}, concept {concepts[c, j]}" for j in range(1, per_class)
        ]
        prompts = [f"{name}, which {t}." for t in texts]
        for j, p in enumerate(prompts):
            rows[p] = c * per_class + j
        base = f"a photo of a {name}."
        rows[base] = n + c
        classes.append(DraftClass(name, base, texts, prompts, [False] * per_class))
    enc = EncoderInfo(f"synthetic-{dim}", "synthetic", dim, 100.0)
    norms = np.ones(len(vectors), np.float32)
    return LibraryDraft("scale", enc, "paper", "a photo of a {class}.", classes, rows, vectors, norms)


# -- one write, in its own process -----------------------------------------------------------


class Stages(logging.Handler):
    """Records the writer's ``write_library stage: NAME`` debug lines as stage ends."""

    def __init__(self, mark):
        super().__init__(logging.DEBUG)
        self.mark = mark

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("write_library stage: "):
            self.mark(msg.split(": ", 1)[1])


def folder_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())}


def db_sizes(store) -> dict[str, int]:
    from sqlalchemy import text

    engine = store.engine
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database)
        files = [path, path.with_name(path.name + "-wal")]
        return {"database_file": sum(p.stat().st_size for p in files if p.exists())}
    with engine.connect() as conn:
        out = {
            f"{t}_relation": int(conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
            for t in ("descriptors", "classes", "shared_texts", "libraries")
        }
        out["database"] = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    return out


def write_once(work: Path, db_url: str | None, per_class: int, dim: int) -> dict[str, Any]:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from whyclip.store import Store
    from whyclip.store.db.schema import ClassRow, DescriptorRow, SharedTextRow

    memory = Memory()
    memory.reset()
    stages: list[dict[str, Any]] = []
    clock = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        stages.append({"stage": name, "seconds": round(now - clock[0], 2), **memory.reset()})
        clock[0] = time.perf_counter()

    draft = build_draft(work, per_class, dim)
    mark("draft (Python objects)")
    home = work / "home"
    store = Store.open(home, db_url or f"sqlite:///{home / 'store.db'}")
    mark("open store")
    logger = logging.getLogger("whyclip.store.catalogue")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Stages(mark))
    t = time.perf_counter()
    info = store.write_library(draft)
    write_s = time.perf_counter() - t
    mark("checkpoint and row read-back")
    del draft
    with Session(store.engine) as s:
        n_rows = {
            "descriptors": s.scalar(select(func.count()).select_from(DescriptorRow)),
            "classes": s.scalar(select(func.count()).select_from(ClassRow)),
            "shared_texts": s.scalar(select(func.count()).select_from(SharedTextRow)),
        }
    folder = store.index_folder(info)
    sizes = folder_sizes(folder)
    sizes.update(db_sizes(store))
    mark("count rows")
    lib = store.load("scale")
    queries = np.random.default_rng(3).standard_normal((8, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    lib.files.searcher.search(queries, 10)
    mark("load + first search")
    memory.stop()
    rows_stage = next((s for s in stages if s["stage"] == "rows"), None)
    return {
        "db": store.engine.dialect.name,
        "index_factory": info.index_factory,
        "index": info.index_label,
        "recall_at_10": info.recall_at_10,
        "write_library_s": round(write_s, 1),
        "rows": n_rows,
        "descriptor_rows_per_s": round(n_rows["descriptors"] / rows_stage["seconds"]) if rows_stage else None,
        "sizes": sizes,
        "stages": stages,
    }


# -- the driver ----------------------------------------------------------------------------


def child(mode: str, work: Path, args: argparse.Namespace, db_url: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", mode, "--_work", str(work), "--per-class", str(args.per_class)]
    cmd += ["--dim", str(args.dim), "--n", str(args.n_one)]
    if db_url:
        cmd += ["--_db", db_url]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {
            "error": (done.stderr.strip().splitlines() or ["exit " + str(done.returncode)])[-1],
            "returncode": done.returncode,
            "seconds": round(time.perf_counter() - t, 1),
        }
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - t, 1)
    return result


def mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


OUTSIDE_WRITER = ("draft (Python objects)", "open store", "count rows", "load + first search")


def summary(n: int, db: str, r: dict[str, Any]) -> dict[str, Any]:
    """One row of the table (MB, seconds)."""
    if "error" in r:
        return {"n": n, "db": db, "error": r["error"]}
    s = r["sizes"]
    by = {x["stage"]: x for x in r["stages"]}
    vec = s.get("vectors.npy", 0)
    out = {
        "n": n,
        "db": db,
        "index": r["index"],
        "vectors_npy_mb": mb(vec),
        "class_baseline_mb": mb(s.get("class_baseline.npy")),
        "norms_offsets_mb": mb(s.get("descriptor_norms.npy", 0) + s.get("class_offsets.npy", 0)),
        "index_mb": mb(s.get("pq_fastscan.faiss", 0) + s.get("pq_centre.npy", 0) + s.get("descriptors.faiss", 0)),
        "db_mb": mb(s.get("database_file", s.get("database"))),
        "descriptors_relation_mb": mb(s.get("descriptors_relation")),
        "write_library_s": r["write_library_s"],
        "descriptor_rows_per_s": r["descriptor_rows_per_s"],
    }
    writer = [x for x in r["stages"] if x["stage"] not in OUTSIDE_WRITER]
    out["write_peak_anon_mb"] = max((x["peak_anon_mb"] for x in writer), default=None)
    out["write_vm_hwm_mb"] = max((x["vm_hwm_mb"] for x in writer), default=None)
    out["draft_anon_mb"] = by.get("draft (Python objects)", {}).get("peak_anon_mb")
    for stage, x in by.items():
        out[f"{stage} s"] = x["seconds"]
        out[f"{stage} anon MB"] = x["peak_anon_mb"]
        out[f"{stage} VmHWM MB"] = x["vm_hwm_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000000", help="descriptor counts, comma-separated (e.g. 1000000,10000000)")
    ap.add_argument("--db", default="sqlite", help="sqlite, postgres or both, comma-separated")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyclip-store-scale"), help="scratch folder (big files)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store_scale.jsonl")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        args.n_one = int(args.n)
        if args._child == "generate":
            result = generate(args.n_one, args.per_class, args.dim, args._work)
        else:
            result = write_once(args._work, args._db, args.per_class, args.dim)
        print(json.dumps(result))
        return
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    unknown = [d for d in dbs if d not in ("sqlite", "postgres")]
    if unknown:
        sys.exit(f"unknown --db {unknown[0]!r}: use sqlite, postgres or sqlite,postgres")
    cluster = server = None
    if "postgres" in dbs:
        pg = importlib.import_module("tests.helpers.pg")  # the tests' throwaway cluster (not a package mypy sees)
        server, why, cluster = pg.start_server()
        if server is None:
            sys.exit(f"no PostgreSQL for --db postgres: {why}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n in [int(x) for x in args.n.split(",")]:
            args.n_one = n
            work = args.work / f"n{n}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                gen = child("generate", work, args)
                print(json.dumps({"n": n, "generate": gen}), flush=True)
                if "error" in gen:
                    continue
                for db in dbs:
                    url = name = None
                    if db == "postgres":
                        url, name = pg.create_database(server)
                    try:
                        r = child("write", work, args, url)
                    finally:
                        shutil.rmtree(work / "home", ignore_errors=True)
                        if name:
                            pg.drop_database(server, name)
                    line = {
                        "n": n,
                        "db": db,
                        "per_class": args.per_class,
                        "dim": args.dim,
                        "generate": gen,
                        "result": r,
                        "summary": summary(n, db, r),
                        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    }
                    with open(args.out, "a") as f:
                        f.write(json.dumps(line) + "\n")
                    print(json.dumps(line["summary"]), flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
