"""The writer at scale (issue 23): ``Store.write_library`` streams a version's vectors from
the draft (a read-only memory map included) into its files in chunks, builds the retrieval
index from the file, and inserts the rows in bounded batches, writing exactly what holding
everything in memory wrote: the same file bytes, the same class means, the same rows."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import whyclip.store.catalogue as catalogue
import whyclip.store.vectors.files as files_module
from whyclip.store import Store
from whyclip.store.db.schema import ClassRow, DescriptorRow, SharedTextRow
from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft
from whyclip.store.vectors.pqrerank import build_pq, serialize

DIM = 16


def make_draft(n_classes: int = 300, seed: int = 0, name: str = "scale") -> LibraryDraft:
    """Classes of 0 to 9 descriptors, some texts shared across classes, some prompts
    truncated, and a prompt -> row map that is partly in label order (runs of rows) and
    partly shuffled, with a prompt used by two classes (one row, read twice)."""
    rng = np.random.default_rng(seed)
    classes, prompts = [], []
    for c in range(n_classes):
        k = int(rng.integers(0, 10))
        texts = [f"shared {int(rng.integers(0, 20))}" if rng.random() < 0.3 else f"own {c}.{j}" for j in range(k)]
        texts = list(dict.fromkeys(texts))
        ps = [f"class {c}, which has {t}." for t in texts]
        if c == 7 and k:
            ps[0] = "one prompt two classes use."
        if c == 8 and k:
            ps[0] = "one prompt two classes use."
        trunc = [bool(rng.random() < 0.1) for _ in texts]
        base = f"a photo of a class {c}."
        classes.append(DraftClass(f"class {c}", base, texts, ps, trunc))
        prompts += [base, *ps]
    distinct = list(dict.fromkeys(prompts))
    order = np.arange(len(distinct))
    half = len(order) // 2
    order[half:] = half + rng.permutation(len(order) - half)  # the second half's rows shuffled
    rows = {p: int(order[i]) for i, p in enumerate(distinct)}
    vectors = rng.standard_normal((len(distinct), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    norms = rng.uniform(5, 10, len(distinct)).astype(np.float32)
    enc = EncoderInfo(f"test-{DIM}", "test", DIM, 100.0)
    return LibraryDraft(name, enc, "paper", "a photo of a {class}.", classes, rows, vectors, norms)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def oracle(draft: LibraryDraft) -> dict:
    """What the version's files and rows must hold, computed the plain way on whole arrays."""
    rows_of = draft.prompt_rows
    desc = [rows_of[p] for c in draft.classes for p in c.prompts]
    base = [rows_of[c.baseline_prompt] for c in draft.classes]
    full = np.asarray(draft.vectors)
    vectors = np.ascontiguousarray(full[desc], dtype=np.float32).reshape(-1, DIM)
    offsets = np.concatenate([[0], np.cumsum([len(c.prompts) for c in draft.classes])]).astype(np.int64)
    baseline = np.asarray(full[base], dtype=np.float32)
    means = baseline.copy()
    for i in range(len(draft.classes)):
        if offsets[i + 1] > offsets[i]:
            means[i] = (
                vectors[offsets[i] : offsets[i + 1]].astype(np.float64).sum(axis=0) / (offsets[i + 1] - offsets[i])
            ).astype(np.float32)
    having: dict[str, list[str]] = {}
    for c in draft.classes:
        for t in dict.fromkeys(c.descriptors):
            having.setdefault(t, []).append(c.name)
    descriptor_rows = [
        (i, j, t, p, bool(tr), len(having[t]))
        for i, c in enumerate(draft.classes)
        for j, (t, p, tr) in enumerate(zip(c.descriptors, c.prompts, c.truncated, strict=True))
    ]
    shared = [(t, len(names), ", ".join(names[:8])) for t, names in having.items() if len(names) > 1]
    classes = [(i, c.name, len(c.prompts), c.baseline_prompt) for i, c in enumerate(draft.classes)]
    return {
        "files": {
            "vectors.npy": npy_bytes(vectors),
            "class_baseline.npy": npy_bytes(baseline),
            "class_offsets.npy": npy_bytes(offsets),
            "descriptor_norms.npy": npy_bytes(np.asarray(draft.norms)[desc].astype(np.float32)),
        },
        "vectors": vectors,
        "means": means,
        "classes": classes,
        "descriptors": descriptor_rows,
        "shared": shared,
    }


def stored_rows(store: Store, library_id: int, first: int) -> dict:
    with Session(store.engine) as s:
        cls = s.execute(
            select(ClassRow.id, ClassRow.position, ClassRow.name, ClassRow.n_descriptors, ClassRow.baseline_prompt)
            .where(ClassRow.library_id == library_id)
            .order_by(ClassRow.id)
        ).all()
        position_of = {r[0]: r[1] for r in cls}
        desc = s.execute(
            select(
                DescriptorRow.id,
                DescriptorRow.class_id,
                DescriptorRow.position,
                DescriptorRow.text,
                DescriptorRow.prompt,
                DescriptorRow.truncated,
                DescriptorRow.shared,
            )
            .where(DescriptorRow.library_id == library_id)
            .order_by(DescriptorRow.id)
        ).all()
        shared = s.execute(
            select(SharedTextRow.text, SharedTextRow.classes, SharedTextRow.examples)
            .where(SharedTextRow.library_id == library_id)
            .order_by(SharedTextRow.id)
        ).all()
    assert [r[0] for r in desc] == list(range(first, first + len(desc)))  # contiguous keys in label order
    return {
        "classes": [tuple(r[1:]) for r in cls],
        "descriptors": [(position_of[r[1]], r[2], r[3], r[4], bool(r[5]), r[6]) for r in desc],
        "shared": [tuple(r) for r in shared],
    }


def version_files(store: Store, name: str) -> dict[str, bytes]:
    folder = store.index_folder(store.library(name))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.usefixtures("database")  # on SQLite and on PostgreSQL
def test_streamed_files_and_rows_are_exactly_the_whole_array_result(store, monkeypatch):
    """Chunks of 7 rows and batches of 5 rows (runs, gathers, partial last chunks, a class
    split across batches) give the bytes and rows of the whole-array computation."""
    monkeypatch.setattr(files_module, "WRITE_CHUNK", 7)
    monkeypatch.setattr(catalogue, "INSERT_BATCH", 5)
    draft = make_draft()
    want = oracle(draft)
    info = store.write_library(draft)
    got = version_files(store, "scale")
    for name, data in want["files"].items():
        assert got[name] == data, name
    lib = store.load("scale")
    assert np.array_equal(np.asarray(lib.files.matrices.mean), want["means"])
    rows = stored_rows(store, info.id, info.first_descriptor_id)
    assert rows["classes"] == want["classes"]
    assert rows["descriptors"] == want["descriptors"]
    assert rows["shared"] == want["shared"]
    assert want["shared"]  # the cases are there: shared texts, an empty class
    assert any(len(c.prompts) == 0 for c in draft.classes)


@pytest.mark.usefixtures("database")
def test_a_read_only_memmap_draft_writes_what_an_in_memory_one_does(store, tmp_path):
    """The vectors as a read-only np.memmap (as ingest hands them over): the same files,
    the PQ index included (built from the version's file, equal to one built from the
    whole array in memory), and the same rows."""
    draft = make_draft(400, seed=1)
    draft.index_factory = "PQ8x4fs+rerank"
    want = oracle(draft)
    path = tmp_path / "draft.npy"
    np.save(path, draft.vectors)
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    assert not mapped.flags.writeable
    twin = make_draft(400, seed=1, name="scale-memmap")
    twin.index_factory = "PQ8x4fs+rerank"
    twin.vectors = mapped
    a, b = store.write_library(draft), store.write_library(twin)
    fa, fb = version_files(store, "scale"), version_files(store, "scale-memmap")
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name != "manifest.json":
            assert fa[name] == fb[name], name
    for name, data in want["files"].items():
        assert fb[name] == data, name
    index, centre = build_pq(want["vectors"], "PQ8x4fs+rerank")
    assert fb["pq_fastscan.faiss"] == serialize(index)
    assert fb["pq_centre.npy"] == npy_bytes(centre)
    ma, mb = (json.loads(f["manifest.json"]) for f in (fa, fb))
    timing = {"approx_ms", "exact_ms", "exact_fallback"}  # measured, so they may differ
    assert {k: v for k, v in ma["index_params"].items() if k not in timing} == {
        k: v for k, v in mb["index_params"].items() if k not in timing
    }
    ra = stored_rows(store, a.id, a.first_descriptor_id)
    rb = stored_rows(store, b.id, b.first_descriptor_id)
    assert ra == rb
    _, found = store.load("scale-memmap").files.searcher.search(want["vectors"][:3], 5)
    assert found[:, 0].tolist() == [0, 1, 2]  # it loads and finds each vector first


PEAK = """
import json, sys, threading, time
import numpy as np
from whyclip.store import Store
from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft

folder, n_classes, per, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = n_classes * per
out = np.lib.format.open_memmap(folder + "/vectors.npy", mode="w+", dtype=np.float32, shape=(n + n_classes, dim))
rng = np.random.default_rng(0)
for lo in range(0, len(out), 2048):
    block = rng.standard_normal((min(2048, len(out) - lo), dim)).astype(np.float32)
    out[lo : lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
out.flush()
del out
vectors = np.load(folder + "/vectors.npy", mmap_mode="r")
classes, rows = [], {}
for c in range(n_classes):
    prompts = [f"class {c}, which has feature {j}." for j in range(per)]
    rows.update({p: c * per + j for j, p in enumerate(prompts)})
    rows[f"a photo of a class {c}."] = n + c
    classes.append(DraftClass(f"class {c}", f"a photo of a class {c}.", [f"feature {j}" for j in range(per)],
                              prompts, [False] * per))
draft = LibraryDraft("big", EncoderInfo("t", "t", dim, 100.0), "paper", "a photo of a {class}.", classes, rows,
                     vectors, np.ones(len(vectors), np.float32), index_factory="Flat")
store = Store.open(folder + "/home")

def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) * 1024

peak, stop = [anon()], threading.Event()
def sample():
    while not stop.wait(0.002):
        peak[0] = max(peak[0], anon())
before = peak[0]
thread = threading.Thread(target=sample, daemon=True)
thread.start()
store.write_library(draft)
stop.set()
thread.join()
print(json.dumps({"rise": max(peak[0], anon()) - before, "vectors": int(n * dim * 4)}))
"""


def test_writing_from_a_memmap_does_not_copy_the_vectors(tmp_path):
    """A fresh process writes a 160 MB memory-mapped draft (Flat, 20k descriptors of
    dimension 2048): its anonymous memory rises by well under the vectors' size (the old
    writer gathered them all into one array first)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK), str(tmp_path), "2000", "10", "2048"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["vectors"] == 20_000 * 2048 * 4
    assert got["rise"] < got["vectors"] / 3, got


def test_pq_candidates_merged_shard_group_by_group_equal_one_sort_of_all(monkeypatch):
    """The PQ index's candidates over many shards, merged a core's worth of shards at a time
    (so the depth tuning at 10M holds a few shards' candidates, not 39), are exactly what
    sorting every shard's candidates at once gives: (approximate score, position) order."""
    from whyclip.store.vectors import pqrerank

    monkeypatch.setattr(pqrerank, "SHARD_ROWS", 256)
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((3000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, centre = build_pq(vectors, "PQ8x4fs+rerank")
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    for n_cores in (1, 2, 3):
        monkeypatch.setattr(pqrerank, "cores", lambda n=n_cores: n)
        monkeypatch.setattr(pqrerank, "_POOL", None)
        searcher = pqrerank.PQRerank(vectors, centre, 10, index=faiss_clone(index))
        shards = searcher.shards()
        assert len(shards) == 12
        for depth in (5, 300, 5000):
            found = [s.search(queries, min(depth, s.ntotal)) for _, s in shards]
            sims = np.concatenate([f[0] for f in found], axis=1)
            pos = np.concatenate(
                [np.where(f[1] >= 0, f[1] + lo, -1) for f, (lo, _) in zip(found, shards, strict=True)], axis=1
            )
            sims = np.where(pos >= 0, sims, -np.inf)
            want = np.take_along_axis(pos, np.lexsort((pos, -sims), axis=1)[:, :depth], axis=1)
            assert np.array_equal(searcher.candidates(queries, depth), want), (n_cores, depth)


def faiss_clone(index):
    import faiss

    return faiss.clone_index(index)
