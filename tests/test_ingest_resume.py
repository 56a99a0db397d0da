"""The embedding cache: an edited library re-embeds only what changed, and an ingest
killed mid-way resumes without re-embedding its committed batches."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT
from tests.helpers.fakes import FakeEncoder
from whyclip.ingest import ingest_library
from whyclip.store import Store
from whyclip.store.db import embedding_cache

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def committed_rows(db) -> int:
    """Cache rows committed so far, read without opening (and so never migrating) the
    store while the ingest process may still be creating its schema: from the SQLite file,
    or from the PostgreSQL database in ``$WHYCLIP_DB``."""
    if os.environ.get("WHYCLIP_DB"):
        import sqlalchemy as sa

        engine = sa.create_engine(os.environ["WHYCLIP_DB"])
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM embeddings")).scalar_one()
        except sa.exc.ProgrammingError:  # no table yet
            return 0
        finally:
            engine.dispose()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def synthetic(n_classes: int, per_class: int) -> dict[str, list[str]]:
    return {f"class {c}": [f"feature {c}-{j} with a colour" for j in range(per_class)] for c in range(n_classes)}


def test_editing_one_percent_reembeds_exactly_that(store, other_database):
    lib = synthetic(100, 10)  # 1,000 descriptors + 100 baseline prompts
    enc = FakeEncoder()
    first = ingest_library(store, lib, "big", enc)
    assert (first.n_embedded, first.n_reused) == (1100, 0)
    edited = {k: list(v) for k, v in lib.items()}
    changed = []
    for c in range(0, 100, 10):  # 10 descriptors = 1%
        edited[f"class {c}"][3] = f"an edited feature {c}"
        changed.append(f"class {c}, which is an edited feature {c}")
    enc.embedded.clear()
    second = ingest_library(store, edited, "big", enc)
    assert sorted(enc.embedded) == sorted(changed)
    assert (second.n_embedded, second.n_reused) == (10, 1090)
    assert second.info.version == 2
    # the vectors of the new version are those of a fresh ingest of the edited library
    fresh = Store.open(store.home.parent / "fresh", other_database())
    ingest_library(fresh, edited, "big", FakeEncoder())
    assert (store.load("big").vectors == fresh.load("big").vectors).all()


def test_cache_is_per_encoder(store):
    ingest_library(store, synthetic(3, 2), "a", FakeEncoder(tag="one"))
    other = FakeEncoder(tag="two")
    report = ingest_library(store, synthetic(3, 2), "b", other)
    assert report.n_reused == 0
    assert report.n_embedded == 9
    assert embedding_cache.count(store.engine, "fake-32-one") == embedding_cache.count(store.engine, "fake-32-two") == 9


class DiesAfter(FakeEncoder):
    """An encoder whose process dies (an uncatchable-looking interrupt) on its ``n``-th batch."""

    def __init__(self, n: int):
        super().__init__()
        self.calls, self.n = 0, n

    def embed_texts(self, texts, progress=None):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt  # what Ctrl-C raises mid-ingest
        return super().embed_texts(texts, progress)


def test_an_interrupted_ingest_resumes_without_reembedding(store, other_database):
    """In process (the fast tier's twin of the kill test below): an ingest interrupted on
    its fourth batch publishes nothing; the rerun embeds only what was not committed."""
    lib = synthetic(60, 9)  # 540 descriptors + 60 baseline prompts
    with pytest.raises(KeyboardInterrupt):
        ingest_library(store, lib, "big", DiesAfter(4), commit_every=100)
    committed = embedding_cache.count(store.engine)
    assert 100 <= committed < 600
    assert store.libraries() == []  # nothing half-written is visible
    enc = FakeEncoder()
    report = ingest_library(store, lib, "big", enc, commit_every=100)
    assert (report.n_embedded, report.n_reused) == (600 - committed, committed)
    assert len(enc.embedded) == 600 - committed
    # the resumed version's vectors are those of an uninterrupted ingest
    whole = Store.open(store.home.parent / "whole", other_database())
    ingest_library(whole, lib, "big", FakeEncoder())
    assert (store.load("big").vectors == whole.load("big").vectors).all()


@pytest.mark.slow
def test_a_killed_ingest_resumes_without_reembedding(tiny_model, tmp_path):
    """SIGKILL a real ingest process after some batches are committed; no version is
    visible; rerunning the same command embeds only what the first run had not committed."""
    lib = synthetic(900, 20)  # 18,000 descriptors + 900 baseline prompts
    path = tmp_path / "big.json"
    path.write_text(json.dumps(lib))
    home = tmp_path / "home"
    cmd = [
        sys.executable,
        "-m",
        "whyclip.ui.cli.main",
        "--home",
        str(home),
        "ingest",
        str(path),
        "-l",
        "big",
        "-m",
        str(tiny_model),
        "--commit-every",
        "300",
        "--precision",
        "fp32",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if committed_rows(home / "whyclip.db") >= 300:  # the first batch is committed
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest finished before it could be killed: make the library bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store.open(home, create=False)
    committed = embedding_cache.count(store.engine)
    assert 300 <= committed < 18900
    assert store.libraries() == []  # nothing half-written is visible
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    embedded, reused = map(int, re.search(r"\((\d+) embedded, (\d+) from the cache\)", rerun.stdout).groups())
    assert (embedded, reused) == (18900 - committed, committed)
    info = store.library("big")
    assert (info.version, info.n_descriptors, info.n_prompts) == (1, 18000, 18900)
    assert embedding_cache.count(store.engine) == 18900


def test_a_version_too_big_for_memory_goes_through_a_temporary_file_unchanged(
    store, other_database, tmp_path, monkeypatch
):
    """Above the in-memory bound the version's vectors are gathered in a temporary file and
    the cache is read a slice at a time: the version stored is the same, file for file."""
    from whyclip.ingest.services import library_ingest

    lib = synthetic(40, 6)
    enc = FakeEncoder()
    other = Store.open(tmp_path / "in-memory", other_database())  # its own database and cache
    half = {k: v[:3] for k, v in list(lib.items())[:20]}  # half the prompts cached first, in both stores
    ingest_library(store, half, "half", enc)
    ingest_library(other, half, "half", enc)
    made: list = []
    real = library_ingest._version_arrays
    monkeypatch.setattr(library_ingest, "LOOKUP_SLICE", 7)
    monkeypatch.setattr(library_ingest, "IN_MEMORY_BYTES", 1024)
    monkeypatch.setattr(library_ingest, "_version_arrays", lambda *a: made.append(real(*a)) or made[-1])
    small = ingest_library(store, lib, "big", enc, commit_every=16)
    assert isinstance(made[0][0], np.memmap)
    monkeypatch.undo()
    big = ingest_library(other, lib, "big", enc, commit_every=16)
    assert (small.n_embedded, small.n_reused) == (big.n_embedded, big.n_reused) == (200, 80)
    ours, theirs = store.load("big"), other.load("big")
    assert np.array_equal(ours.files.vectors, theirs.files.vectors)
    assert np.array_equal(ours.files.norms, theirs.files.norms)
