"""The store: versions appear whole or not at all, index files belong to one database,
and a library refuses vectors from another encoder."""

from __future__ import annotations

import json

import pytest

import whyclip.store.catalogue as library_module
from tests.helpers.fakes import FakeEncoder
from whyclip.ingest import ingest_library
from whyclip.store import EncoderMismatch, LibraryNotFound, Store, StoreError

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

LIB = {"tree frog": ["protruding eyes", "bright green colour"], "tailed frog": ["brown skin"], "empty": []}


def test_reingest_makes_a_new_version_and_keeps_the_old(store):
    enc = FakeEncoder()
    ingest_library(store, LIB, "frogs", enc)
    ingest_library(store, {**LIB, "toad": ["warts"]}, "frogs", enc, template="bare")
    assert store.library("frogs").version == 2
    assert store.library("frogs").n_classes == 4
    old = store.load("frogs", 1)
    assert old.info.template == "paper"
    assert old.class_names == ["tree frog", "tailed frog", "empty"]
    assert [i.version for i in store.libraries()] == [2]


def test_a_failed_write_leaves_nothing_visible_or_on_disk(store, monkeypatch):
    enc = FakeEncoder()
    ingest_library(store, LIB, "frogs", enc)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(library_module, "write_index_files", crash)
    with pytest.raises(OSError, match="disk full"):
        ingest_library(store, {**LIB, "toad": ["warts"]}, "frogs", enc)
    assert store.library("frogs").version == 1
    folders = list((store.home / "indexes" / store.store_id).iterdir())
    assert [f.name for f in folders] == [store.library("frogs").index_key]
    with pytest.raises(LibraryNotFound):
        store.library("frogs", 2)


def test_a_failure_writing_rows_after_the_files_leaves_nothing(store, monkeypatch):
    """Phase two (the rows) fails after phase one (the files) succeeded: no version, no
    rows, and the new files are removed."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from whyclip.store.db.schema import ClassRow, DescriptorRow

    enc = FakeEncoder()
    ingest_library(store, LIB, "frogs", enc)
    with Session(store.engine) as s:
        before = (
            s.scalar(select(func.count()).select_from(ClassRow)),
            s.scalar(select(func.count()).select_from(DescriptorRow)),
        )

    def crash(classes):
        raise RuntimeError("database went away")

    monkeypatch.setattr(library_module, "_shared_texts", crash)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_library(store, {**LIB, "toad": ["warts"]}, "frogs", enc)
    assert store.library("frogs").version == 1
    folders = list((store.home / "indexes" / store.store_id).iterdir())
    assert [f.name for f in folders] == [store.library("frogs").index_key]
    with Session(store.engine) as s:
        after = (
            s.scalar(select(func.count()).select_from(ClassRow)),
            s.scalar(select(func.count()).select_from(DescriptorRow)),
        )
    assert after == before


def test_index_files_are_built_before_the_database_is_written(store, monkeypatch):
    """The slow phase (index, recall) runs with no transaction open: another connection
    can write meanwhile."""
    import whyclip.store.vectors.files as index_module
    from whyclip.store.db.schema import Meta

    seen = []
    real = index_module.build_retrieval

    def build_and_write_elsewhere(*args, **kwargs):
        with store.engine.begin() as conn:  # would wait or fail if a write transaction were open
            conn.execute(Meta.__table__.insert(), [{"key": "probe", "value": "x"}])
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(library_module, "build_retrieval", build_and_write_elsewhere)
    ingest_library(store, LIB, "frogs", FakeEncoder())
    assert seen == [True]
    assert store.library("frogs").version == 1


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
    assert report.n_embedded == 5
    assert report.info.n_descriptors == 3
    assert report.info.n_prompts == 5


def test_browse_pages_search_sort_and_share_counts(store):
    from whyclip.store.db import browse

    lib = {
        "b cat": ["fur", "100% whiskers", "long_tail"],
        "a dog": ["fur", "long tail"],
        "c fish": [],
        "d rat": ["fur", "long tail"],
    }
    ingest_library(store, lib, "pets", FakeEncoder())
    info = store.library("pets")
    rows = browse.descriptors_page(store.engine, info)
    assert [(r["class"], r["descriptor"], r["classes sharing it"]) for r in rows] == [
        ("b cat", "fur", 3),
        ("b cat", "100% whiskers", 1),
        ("b cat", "long_tail", 1),
        ("a dog", "fur", 3),
        ("a dog", "long tail", 2),
        ("d rat", "fur", 3),
        ("d rat", "long tail", 2),
    ]
    assert [r["descriptor"] for r in browse.descriptors_page(store.engine, info, offset=5, limit=5)] == [
        "fur",
        "long tail",
    ]
    assert browse.count_descriptor_rows(store.engine, info) == 7
    # LIKE wildcards in a search are literal characters
    assert [r["descriptor"] for r in browse.descriptors_page(store.engine, info, "100%")] == ["100% whiskers"]
    assert [r["descriptor"] for r in browse.descriptors_page(store.engine, info, "long_")] == ["long_tail"]
    assert browse.count_descriptor_rows(store.engine, info, "LONG") == 3
    assert [r["descriptor"] for r in browse.descriptors_page(store.engine, info, order="descriptor (A-Z)")][:2] == [
        "100% whiskers",
        "fur",
    ]
    classes = browse.classes_page(store.engine, info, order="fewest descriptors")
    assert [(c["class"], c["descriptors"]) for c in classes] == [
        ("c fish", 0),
        ("a dog", 2),
        ("d rat", 2),
        ("b cat", 3),
    ]
    assert [c["class"] for c in browse.classes_page(store.engine, info, order="class name")] == [
        "a dog",
        "b cat",
        "c fish",
        "d rat",
    ]
    shared = browse.shared_descriptors_page(store.engine, info)
    assert [(r["descriptor"], r["classes"], r["in"]) for r in shared] == [
        ("fur", 3, "b cat, a dog, d rat"),
        ("long tail", 2, "a dog, d rat"),
    ]
    assert browse.count_shared_descriptors(store.engine, info) == 2


def _clustered(n_classes: int, per_class: int, dim: int = 32, seed: int = 0) -> tuple[dict, FakeEncoder]:
    """A library whose prompts a fake encoder maps to clustered vectors (one concept per class)."""
    concepts = [f"concept{c:03d}" for c in range(n_classes)]
    lib = {f"class {c}": [f"{concepts[c]} part {j}" for j in range(per_class)] for c in range(n_classes)}
    return lib, FakeEncoder(concepts, dim=dim, noise=0.8)


def test_a_class_ivf_by_name_has_measured_recall_and_exact_scores(tmp_path, monkeypatch, other_database):
    """The class inverted file (the default before the PQ index; see
    test_retrieval_calibration.py for that one) is still built when asked for by name."""
    import numpy as np

    import whyclip.store.vectors.files as index_module
    import whyclip.store.vectors.recall_tuning as calibration

    calls = iter(range(10**6))  # its timing says it beats the exact scan (at 800 descriptors it would not)
    monkeypatch.setattr(calibration, "median_ms", lambda fn, q: 0.1 if next(calls) % 2 == 0 else 1.0)

    lib, enc = _clustered(40, 20)  # 800 descriptors
    approx_store = Store.open(tmp_path / "a")
    ingest_library(approx_store, lib, "big", enc, index_factory="ClassIVF")
    exact_store = Store.open(tmp_path / "b", other_database())
    ingest_library(exact_store, lib, "big", enc, index_factory="Flat")
    approx, exact = approx_store.load("big"), exact_store.load("big")
    assert approx.info.index_factory == "ClassIVF"
    assert exact.info.index_factory == "Flat"
    assert 0.9 <= approx.info.recall_at_10 <= 1.0
    assert exact.info.recall_at_10 == 1.0
    assert approx.info.index_params["calibrated_on"] == "400 proxy image queries"
    # the chosen parameters are persisted in the row and the manifest, and used when loaded
    params = approx.info.index_params
    assert params["probe"] >= 8
    assert params["calibration_recall"] >= 0.95
    assert params["recall_target"] == 0.95
    manifest = json.loads((approx_store.index_folder(approx.info) / "manifest.json").read_text())
    assert manifest["index_params"] == params
    assert manifest["layout"] == 2
    assert approx.files.searcher.probe == params["probe"]
    assert index_module.codes_digest(approx.files.searcher.codes) == params["codes_sha256"]  # derived again on load
    # one copy of the vectors and nothing derivable: no FAISS file, class means, centroids or codes
    files = {f.name for f in approx_store.index_folder(approx.info).iterdir()}
    assert files == {"manifest.json", "vectors.npy", "descriptor_norms.npy", "class_baseline.npy", "class_offsets.npy"}
    images = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    for aggregate in ("mean", "centroid", "max"):  # class scores stay exact whatever the index
        np.testing.assert_allclose(approx.scores(images, aggregate), exact.scores(images, aggregate), atol=1e-6)
    assert not approx.vectors.flags.writeable  # memory-mapped, shared, never written


def test_class_ivf_search_against_brute_force():
    """Seeded random data of odd sizes, compared with a brute-force numpy reference."""
    import numpy as np

    from whyclip.store.method import class_sums
    from whyclip.store.vectors.retrieval import build_class_ivf
    from whyclip.store.vectors.search import exact_search

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 9, size=17)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    vectors = rng.standard_normal((offsets[-1], 7)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = class_sums(vectors, offsets, np.zeros((17, 7), dtype=np.float32))
    ivf = build_class_ivf(vectors, offsets, mean)
    queries = rng.standard_normal((5, 7)).astype(np.float32)
    ivf.probe = len(ivf.codes)  # probing every class is exact
    sims, positions = ivf.search(queries, 6)
    ref_sims, _ref_positions = exact_search(vectors, queries, 6)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-6)
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ vectors.T, positions, axis=1), atol=1e-6)
    brute = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :6]
    np.testing.assert_allclose(ref_sims, brute, atol=1e-6)
    ivf.probe = 1  # too few candidates in one class: it probes more until it has k
    _, few = ivf.search(queries, 6)
    assert (few >= 0).all()
    assert all(len(set(r)) == 6 for r in few.tolist())


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4,Flat", "IDMap,Flat", "Flat"])
def test_faiss_factory_strings_still_work_with_positions_as_ids(store, factory):
    import numpy as np

    lib, enc = _clustered(12, 10)
    ingest_library(store, lib, "f", enc, index_factory=factory)
    loaded = store.load("f")
    assert loaded.info.index_factory == factory
    (exp,) = loaded.explain(loaded.vectors[13:14], top=3)
    assert exp.retrieved[0].class_name == "class 1"
    assert exp.retrieved[0].descriptor == "concept001 part 3"
    assert exp.retrieved[0].descriptor_id == int(loaded.ids[13])
    assert (store.index_folder(loaded.info) / "descriptors.faiss").is_file() == (factory != "Flat")
    assert np.all(np.diff(loaded.ids) == 1)


def test_a_compressed_index_keeps_exact_vectors_beside_it(store):
    import numpy as np

    lib, enc = _clustered(30, 10)
    ingest_library(store, lib, "sq", enc, index_factory="SQ8")
    loaded = store.load("sq")
    assert loaded.info.index_factory == "SQ8"
    assert 0 < loaded.info.recall_at_10 <= 1
    assert (store.index_folder(loaded.info) / "vectors.npy").is_file()
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors, axis=1), 1.0, atol=1e-5)
    (exp,) = loaded.explain(loaded.vectors[:1], top=3)
    assert exp.classes[0].name == "class 0"
    assert len(exp.retrieved) == 10


def test_a_bad_index_factory_is_refused_before_anything_is_written(store):
    from whyclip.store.errors import InputError

    with pytest.raises(InputError, match="FAISS cannot build index 'NoSuchIndex'"):
        ingest_library(store, LIB, "frogs", FakeEncoder(), index_factory="NoSuchIndex")
    assert store.libraries() == []


def test_a_database_missing_columns_is_refused_in_one_line(tmp_path):
    from sqlalchemy import text

    home = tmp_path / "dev"
    Store.open(home).engine.dispose()
    with Store.open(home).engine.begin() as conn:
        conn.execute(text("ALTER TABLE libraries DROP COLUMN recall_at_10"))
    with pytest.raises(StoreError, match=r"lacks libraries\.recall_at_10: .*re-ingest") as err:
        Store.open(home, create=False)
    assert "\n" not in str(err.value)


def test_index_files_of_the_first_layout_are_still_read(store):
    """A version written before schema 2 (a FAISS index keyed by descriptor ids, stored
    class matrices, no first descriptor key) loads and explains the same."""
    import faiss
    import numpy as np
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from whyclip.store.db.schema import LibraryRow

    lib, enc = _clustered(12, 10)
    ingest_library(store, lib, "old", enc)
    new = store.load("old")
    image = new.vectors[13:14]
    (want,) = new.explain(image, top=3)
    folder = store.index_folder(new.info)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(32))
    index.add_with_ids(np.asarray(new.vectors), new.ids)
    faiss.write_index(index, str(folder / "descriptors.faiss"))
    np.save(folder / "class_mean.npy", new.matrices.mean)
    np.save(folder / "class_centroid.npy", new.matrices.centroid)
    manifest = json.loads((folder / "manifest.json").read_text())
    old_manifest = {k: manifest[k] for k in ("store_id", "name", "n_descriptors", "dim", "encoder_id", "index_factory")}
    (folder / "manifest.json").write_text(json.dumps({**old_manifest, "library_id": new.info.id, "version": 1}))
    with Session(store.engine) as s, s.begin():
        s.execute(update(LibraryRow).values(first_descriptor_id=None, index_params=None))
    old = store.load("old")
    assert old.files.descriptor_ids is not None
    assert old.info.first_descriptor_id is None
    (got,) = old.explain(image, top=3)
    got, want = got.to_dict(), want.to_dict()
    hits, want_hits = got.pop("retrieved"), want.pop("retrieved")
    assert got == want  # exact scores, evidence and contrast: the same numbers
    assert [h["descriptor_id"] for h in hits] == [h["descriptor_id"] for h in want_hits]
    np.testing.assert_allclose([h["similarity"] for h in hits], [h["similarity"] for h in want_hits], atol=1e-6)


@pytest.mark.parametrize(
    ("template", "baseline"),
    [
        ("paper", "a photo of a {class}."),
        ("bare", "{class}"),
        ("{{x}} {class}: {descriptor}", "{{a}} {class}"),
        ("{descriptor!r} of {class:>12}", "{class!r}"),
        ("A photo of a {class}, {which}.", "A photo of a {class}."),
    ],
)
def test_prompts_rendered_from_the_template_read_back_as_built(store, template, baseline):
    """Prompts are stored exactly as embedded, with the rule that built them; every reader
    (evidence, retrieval, browsing and its search) sees the prompt the encoder embedded."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from whyclip.store.db import browse
    from whyclip.store.db.schema import ClassRow, DescriptorRow
    from whyclip.store.method.templates import Template, baseline_prompt

    lib = {
        "tree_frog": ["antennae", "canopy", "used for jumping", "has webbed feet", "brown_tail"],
        "cat": ["whiskers"],
    }
    ingest_library(store, lib, "p", FakeEncoder(), template=template, baseline=baseline)
    loaded = store.load("p")
    want_baselines = [baseline_prompt(baseline, c) for c in lib]
    assert loaded.baseline_prompts == want_baselines
    assert [r["baseline prompt"] for r in browse.classes_page(store.engine, loaded.info)] == want_baselines
    build = Template(template).build
    expected = {(c, d): build(c, d) for c, ds in lib.items() for d in ds}
    assert {("tree_frog", t): p for t, p in loaded.class_texts(0)} | {
        ("cat", t): p for t, p in loaded.class_texts(1)
    } == expected
    rows = browse.descriptors_page(store.engine, loaded.info)
    assert {(r["class"], r["descriptor"]): r["prompt"] for r in rows} == expected
    (exp,) = loaded.explain(loaded.vectors[:1], retrieve=6)
    assert all(h.prompt == expected[(h.class_name, h.descriptor)] for h in exp.retrieved)
    with Session(store.engine) as s:
        stored = s.execute(
            select(ClassRow.name, DescriptorRow.text, DescriptorRow.prompt)
            .join(ClassRow, ClassRow.id == DescriptorRow.class_id)
            .where(DescriptorRow.library_id == loaded.info.id)
        ).all()
        baselines = s.scalars(
            select(ClassRow.baseline_prompt).where(ClassRow.library_id == loaded.info.id).order_by(ClassRow.position)
        ).all()
    assert {(c, d): p for c, d, p in stored} == expected
    assert baselines == want_baselines
    assert loaded.info.prompt_rule == (f"{template}/1" if template in ("paper", "bare") else "format/1")
    for term in ("which is used", "tree frog, which", "tree frog: can", "{x}", "'canopy' of"):
        want = sorted(d for (c, d), p in expected.items() if term.lower() in p.lower())
        assert sorted(r["descriptor"] for r in browse.descriptors_page(store.engine, loaded.info, term)) == want, term


def test_a_version_beyond_any_integer_column_is_one_line_not_an_overflow(store):
    """Found by schemathesis: version=2**63 reached SQLite and overflowed (a 500)."""
    ingest_library(store, {"frog": ["green"]}, "frogs", FakeEncoder(["green"]))
    for bad in (0, -1, 2**31, 2**63):
        with pytest.raises(LibraryNotFound, match="versions are numbered"):
            store.library("frogs", bad)
    assert store.library("frogs", 1).version == 1
