"""Many writers and readers at once, through the command line in fresh processes:
parallel ingests of different libraries that share prompts, and of the same name, with
readers running meanwhile; and a re-ingest after a bf16 -> fp32 precision fallback."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.helpers import ROOT
from tests.helpers.cli import FRESH_FAKE, FRESH_FALLBACK
from tests.helpers.fakes import FakeEncoder, planted_png
from tests.helpers.run_cli import CONCEPTS
from whyclip.store import Store
from whyclip.store.db import embedding_cache
from whyclip.store.db.schema import ClassRow, DescriptorRow, EmbeddingRow
from whyclip.store.method.templates import Template

ROUNDS = 3


def whyclip(mode: str, home, *args: str, db: str | None = None) -> list[str]:
    runner = FRESH_FAKE if mode == "fake" else FRESH_FALLBACK
    return [*runner, "--home", str(home), *(["--db", db] if db else []), *args]


def libraries_for(tmp_path) -> dict[str, dict]:
    """Four library files: b and c share two classes (and so their prompts) with a; a2 is
    an edited a, ingested under the name a at the same time as a itself."""
    shared = {"frog": ["green skin", "wide mouth"], "zebra": ["black and white stripes", "a mane"]}
    files = {
        "a": {**shared, "owl": ["wings", "big round eyes"], "bat": ["wings of skin"]},
        "a2": {**shared, "owl": ["wings", "a hooked beak"], "mole": []},
        "b": {"cat": ["fur", "whiskers"], **shared},
        "c": {**shared, "tiger": ["orange fur with stripes"]},
    }
    out = {}
    for stem, content in files.items():
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps(content))
        out[stem] = {"path": path, "content": content, "library": stem[0]}
    return out


def check_versions(store: Store, files: dict[str, dict], expected_versions: dict[str, int]) -> None:
    """Every version whole: numbered 1..n, its descriptor keys contiguous in label order
    and disjoint from every other version's, its rows and vectors those of its file."""
    by_source = {str(f["path"].resolve()): f["content"] for f in files.values()}
    fake = FakeEncoder(CONCEPTS)
    template = Template("paper")
    ranges = []
    for name, n in expected_versions.items():
        versions = sorted(i.version for i in store.libraries(every_version=True) if i.name == name)
        assert versions == list(range(1, n + 1)), name
        for v in versions:
            info = store.library(name, v)
            content = by_source[str((ROOT / info.source).resolve())]
            with Session(store.engine) as s:
                rows = s.execute(
                    select(DescriptorRow.id, ClassRow.name, DescriptorRow.text)
                    .join(ClassRow, ClassRow.id == DescriptorRow.class_id)
                    .where(DescriptorRow.library_id == info.id)
                    .order_by(ClassRow.position, DescriptorRow.position)
                ).all()
            keys = [r[0] for r in rows]
            assert keys == list(range(info.first_descriptor_id, info.first_descriptor_id + info.n_descriptors))
            assert [(r[1], r[2]) for r in rows] == [(c, d) for c, ds in content.items() for d in ds]
            lib = store.load(name, v)
            prompts = [p for c in range(len(lib.class_names)) for _, p in lib.class_texts(c)]
            assert prompts == [template.build(c, d) for c, ds in content.items() for d in ds]
            np.testing.assert_array_equal(lib.vectors, fake.embed_texts(prompts)[0])
            ranges.append((info.first_descriptor_id, info.first_descriptor_id + info.n_descriptors))
    ranges.sort()
    assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(ranges)), ranges


@pytest.mark.slow  # real processes at once
def test_parallel_ingests_and_readers_publish_whole_versions(tmp_path, db_url):
    files = libraries_for(tmp_path)
    home = tmp_path / "home"
    Store.open(home, db_url)  # the schema first: creating it concurrently is the migrations' business
    image = tmp_path / "frog.png"
    image.write_bytes(planted_png(["green"]))
    complete = {
        stem: {"n_descriptors": sum(map(len, f["content"].values())), "n_classes": len(f["content"])}
        for stem, f in files.items()
    }
    for _ in range(ROUNDS):
        writers = [
            subprocess.Popen(
                whyclip("fake", home, "ingest", str(f["path"]), "--library", f["library"], db=db_url),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for f in files.values()
        ]
        reads = 0
        while reads == 0 or any(w.poll() is None for w in writers):
            listed = subprocess.run(
                whyclip("fake", home, "libraries", "--json", "--all", db=db_url),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert listed.returncode == 0, listed.stderr
            assert "Traceback" not in listed.stderr, listed.stderr
            for entry in json.loads(listed.stdout):  # only complete versions are ever listed
                counts = (entry["n_descriptors"], entry["n_classes"])
                stems = [s for s in files if files[s]["library"] == entry["name"]]
                assert counts in [tuple(complete[s].values()) for s in stems], entry
            if any(e["name"] == "a" for e in json.loads(listed.stdout)):
                shown = subprocess.run(
                    whyclip("fake", home, "explain", str(image), "-l", "a", "--json", db=db_url),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert shown.returncode == 0, shown.stderr
                assert "Traceback" not in shown.stderr, shown.stderr
                assert json.loads(shown.stdout.splitlines()[0])["library"] == "a"
            reads += 1
        for w in writers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            assert "Traceback" not in err, err
            assert re.match(r"library [abc] v\d+: ", out), out
    store = Store.open(home, db_url, create=False)
    check_versions(store, files, {"a": 2 * ROUNDS, "b": ROUNDS, "c": ROUNDS})
    distinct = {Template("paper").build(c, d) for f in files.values() for c, ds in f["content"].items() for d in ds}
    distinct |= {f"a photo of a {c}." for f in files.values() for c in f["content"]}
    assert embedding_cache.count(store.engine) == len(distinct)  # each shared prompt cached once


def _cpu_has_bf16() -> bool:
    from whyclip.ingest.encoder.precision import cpu_has_native_bf16

    return cpu_has_native_bf16()


@pytest.mark.slow  # a fresh process per ingest: nothing but the store carries the verdict
def test_reingest_after_a_precision_fallback_reuses_the_fp32_cache(tiny_model, tmp_path):
    if not _cpu_has_bf16():
        pytest.skip("this CPU has no native bf16, so an encoder never starts in bf16 to fall back from")
    lib = tmp_path / "lib.json"
    lib.write_text(json.dumps({"frog": ["green skin", "wide mouth"], "owl": ["wings"], "mole": []}))
    home = tmp_path / "home"
    cmd = whyclip("fallback", home, "ingest", str(lib), "-l", "animals", "-m", str(tiny_model), "--precision", "bf16")
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "falling back to fp32" in first.stderr
    assert "Traceback" not in first.stderr
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr, second.stderr
    assert "(0 embedded, 6 from the cache)" in second.stdout, second.stdout  # 3 descriptor + 3 baseline prompts
    assert second.stdout.rstrip().endswith(", fp32)")
    store = Store.open(home, create=False)
    with Session(store.engine) as s:
        keys = s.scalars(select(EmbeddingRow.encoder_key)).all()
    info = store.library("animals", 2)
    assert keys == [f"{info.encoder_id}/fp32"] * 6
    np.testing.assert_array_equal(store.load("animals", 1).vectors, store.load("animals", 2).vectors)


def test_a_writer_locked_out_past_the_busy_timeout_fails_in_one_line(tmp_path, monkeypatch):
    import sqlite3

    from whyclip.store.db import engine as engines
    from whyclip.store.errors import StoreError

    monkeypatch.setattr(engines, "BUSY_TIMEOUT_S", 1)
    store = Store.open(tmp_path / "home")
    other = sqlite3.connect(str(tmp_path / "home" / "whyclip.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(StoreError) as err:
            embedding_cache.save(store.engine, "enc", ["a prompt"], np.ones((1, 4), np.float32), np.ones(1, np.float32))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert str(err.value) == (
        "could not save 1 vectors to the embedding cache: the database stayed locked by another whyclip writer "
        "for over 1s (a long ingest or gc); nothing was written: run the command again when it has finished"
    )
    assert embedding_cache.count(store.engine) == 0
    embedding_cache.save(store.engine, "enc", ["a prompt"], np.ones((1, 4), np.float32), np.ones(1, np.float32))
    embedding_cache.save(
        store.engine, "enc", ["a prompt"], np.zeros((1, 4), np.float32), np.ones(1, np.float32)
    )  # already there
    assert embedding_cache.count(store.engine) == 1
    assert (
        embedding_cache.lookup(store.engine, "enc", ["a prompt"])["a prompt"][0].tolist() == [1.0] * 4
    )  # the first stays
