"""The store: versions appear whole or not at all, index files belong to one database,
and a library refuses vectors from another encoder."""

from __future__ import annotations

import json

import pytest

import store.library as library_module
from fakes import FakeEncoder
from ingest import ingest_library
from store import EncoderMismatch, LibraryNotFound, Store, StoreError

LIB = {"tree frog": ["protruding eyes", "bright green colour"], "tailed frog": ["brown skin"], "empty": []}


def test_reingest_makes_a_new_version_and_keeps_the_old(store):
    enc = FakeEncoder()
    ingest_library(store, LIB, "frogs", enc)
    ingest_library(store, {**LIB, "toad": ["warts"]}, "frogs", enc, template="bare")
    assert store.library("frogs").version == 2 and store.library("frogs").n_classes == 4
    old = store.load("frogs", 1)
    assert old.info.template == "paper" and old.class_names == ["tree frog", "tailed frog", "empty"]
    assert [i.version for i in store.libraries()] == [2]


def test_a_failed_write_leaves_nothing_visible_or_on_disk(store, monkeypatch):
    enc = FakeEncoder()
    ingest_library(store, LIB, "frogs", enc)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(library_module, "write_index_files", crash)
    with pytest.raises(OSError):
        ingest_library(store, {**LIB, "toad": ["warts"]}, "frogs", enc)
    assert store.library("frogs").version == 1
    folders = list((store.home / "indexes" / store.store_id).iterdir())
    assert [f.name for f in folders] == [store.library("frogs").index_key]
    with pytest.raises(LibraryNotFound):
        store.library("frogs", 2)


def test_two_databases_in_one_home_never_share_index_files(tmp_path):
    home = tmp_path / "home"
    a = Store.open(home, f"sqlite:///{tmp_path / 'a.db'}")
    b = Store.open(home, f"sqlite:///{tmp_path / 'b.db'}")
    assert a.store_id != b.store_id
    ingest_library(a, LIB, "frogs", FakeEncoder())
    ingest_library(b, {"cat": ["whiskers"]}, "frogs", FakeEncoder())
    assert a.load("frogs").class_names == ["tree frog", "tailed frog", "empty"]
    assert b.load("frogs").class_names == ["cat"]
    assert a.index_folder(a.library("frogs")).parent != b.index_folder(b.library("frogs")).parent


def test_index_files_of_another_database_are_refused(store):
    ingest_library(store, LIB, "frogs", FakeEncoder())
    folder = store.index_folder(store.library("frogs"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["store_id"] = "somebody-else"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="do not belong to this database"):
        store.load("frogs")


def test_a_library_refuses_another_encoder(store):
    ingest_library(store, LIB, "frogs", FakeEncoder(tag="a"))
    with pytest.raises(EncoderMismatch, match="was built with encoder 'fake-32-a'"):
        store.load("frogs", encoder_id="fake-32-b")
    lib = store.load("frogs", encoder_id="fake-32-a")
    with pytest.raises(EncoderMismatch, match="dimension"):
        lib.explain([[1.0] * 16])


def test_reading_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no whyclip data"):
        Store.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_each_distinct_prompt_is_embedded_once(store):
    enc = FakeEncoder()
    lib = {"a": ["red", "blue"], "b": ["red"], "c": []}
    report = ingest_library(store, lib, "shared", enc, template="bare")
    # bare prompts: "red" is shared by a and b; plus three baseline prompts
    assert sorted(enc.embedded) == sorted(["red", "blue", "a photo of a a.", "a photo of a b.", "a photo of a c."])
    assert report.n_embedded == 5 and report.info.n_descriptors == 3 and report.info.n_prompts == 5


def test_browse_pages_search_sort_and_share_counts(store):
    from store import browse

    lib = {"b cat": ["fur", "100% whiskers", "long_tail"], "a dog": ["fur", "long tail"], "c fish": [], "d rat": ["fur", "long tail"]}
    ingest_library(store, lib, "pets", FakeEncoder())
    info = store.library("pets")
    rows = browse.descriptors_page(store, info)
    assert [(r["class"], r["descriptor"], r["classes sharing it"]) for r in rows] == [
        ("b cat", "fur", 3), ("b cat", "100% whiskers", 1), ("b cat", "long_tail", 1),
        ("a dog", "fur", 3), ("a dog", "long tail", 2), ("d rat", "fur", 3), ("d rat", "long tail", 2)]
    assert [r["descriptor"] for r in browse.descriptors_page(store, info, offset=5, limit=5)] == ["fur", "long tail"]
    assert browse.count_descriptor_rows(store, info) == 7
    # LIKE wildcards in a search are literal characters
    assert [r["descriptor"] for r in browse.descriptors_page(store, info, "100%")] == ["100% whiskers"]
    assert [r["descriptor"] for r in browse.descriptors_page(store, info, "long_")] == ["long_tail"]
    assert browse.count_descriptor_rows(store, info, "LONG") == 3
    assert [r["descriptor"] for r in browse.descriptors_page(store, info, order="descriptor (A-Z)")][:2] == ["100% whiskers", "fur"]
    classes = browse.classes_page(store, info, order="fewest descriptors")
    assert [(c["class"], c["descriptors"]) for c in classes] == [("c fish", 0), ("a dog", 2), ("d rat", 2), ("b cat", 3)]
    assert [c["class"] for c in browse.classes_page(store, info, order="class name")] == ["a dog", "b cat", "c fish", "d rat"]
    shared = browse.shared_descriptors_page(store, info)
    assert [(r["descriptor"], r["classes"], r["in"]) for r in shared] == [("fur", 3, "b cat, a dog, d rat"), ("long tail", 2, "a dog, d rat")]
    assert browse.count_shared_descriptors(store, info) == 2


def _clustered(n_classes: int, per_class: int, dim: int = 32, seed: int = 0) -> tuple[dict, FakeEncoder]:
    """A library whose prompts a fake encoder maps to clustered vectors (one concept per class)."""
    concepts = [f"concept{c:03d}" for c in range(n_classes)]
    lib = {f"class {c}": [f"{concepts[c]} part {j}" for j in range(per_class)] for c in range(n_classes)}
    return lib, FakeEncoder(concepts, dim=dim, noise=0.8)


def test_large_libraries_get_hnsw_with_measured_recall_and_exact_scores(tmp_path, monkeypatch):
    import numpy as np

    import store.index as index_module

    monkeypatch.setattr(index_module, "HNSW_ABOVE", 500)
    lib, enc = _clustered(40, 20)  # 800 descriptors: above the (patched) threshold
    approx_store = Store.open(tmp_path / "a")
    ingest_library(approx_store, lib, "big", enc)
    exact_store = Store.open(tmp_path / "b")
    ingest_library(exact_store, lib, "big", enc, index_factory="Flat")
    approx, exact = approx_store.load("big"), exact_store.load("big")
    assert approx.info.index_factory == "HNSW32" and exact.info.index_factory == "Flat"
    assert 0.95 <= approx.info.recall_at_10 <= 1.0 and exact.info.recall_at_10 == 1.0
    images = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    for aggregate in ("mean", "centroid", "max"):  # class scores stay exact whatever the index
        np.testing.assert_allclose(approx.scores(images, aggregate), exact.scores(images, aggregate), atol=1e-6)
    assert not approx.vectors.flags.writeable  # memory-mapped, shared, never written


def test_a_compressed_index_keeps_exact_vectors_beside_it(store):
    import numpy as np

    lib, enc = _clustered(30, 10)
    ingest_library(store, lib, "sq", enc, index_factory="SQ8")
    loaded = store.load("sq")
    assert loaded.info.index_factory == "SQ8" and 0 < loaded.info.recall_at_10 <= 1
    assert (store.index_folder(loaded.info) / "vectors.npy").is_file()
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors, axis=1), 1.0, atol=1e-5)
    (exp,) = loaded.explain(loaded.vectors[:1], top=3)
    assert exp.classes[0].name == "class 0" and len(exp.retrieved) == 10


def test_a_bad_index_factory_is_refused_before_anything_is_written(store):
    from store.errors import InputError

    with pytest.raises(InputError, match="FAISS cannot build index 'NoSuchIndex'"):
        ingest_library(store, LIB, "frogs", FakeEncoder(), index_factory="NoSuchIndex")
    assert store.libraries() == []


def test_a_version_1_store_gains_the_eval_tables_and_keeps_its_libraries(tmp_path):
    """Stores written before evaluation runs existed (schema version 1) are migrated in place."""
    from sqlalchemy import inspect, text

    from store import schema

    home = tmp_path / "old"
    store = Store.open(home)
    ingest_library(store, {"frog": ["green"]}, "old", FakeEncoder(["green"]))
    with store.engine.begin() as conn:
        for table in reversed(schema.EVAL_TABLES):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    store.engine.dispose()
    reopened = Store.open(home, create=False)
    with reopened.engine.connect() as conn:
        assert schema.schema_version(conn) == len(schema.MIGRATIONS) == 2
        assert set(schema.EVAL_TABLES) <= set(inspect(conn).get_table_names())
    assert reopened.load("old").class_names == ["frog"]


def test_a_database_missing_columns_is_refused_in_one_line(tmp_path):
    from sqlalchemy import text

    home = tmp_path / "dev"
    Store.open(home).engine.dispose()
    with Store.open(home).engine.begin() as conn:
        conn.execute(text("ALTER TABLE libraries DROP COLUMN recall_at_10"))
    with pytest.raises(StoreError, match=r"lacks libraries\.recall_at_10: .*re-ingest") as err:
        Store.open(home, create=False)
    assert "\n" not in str(err.value)
