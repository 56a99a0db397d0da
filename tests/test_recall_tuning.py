"""Library-wide retrieval on CLIP-shaped vectors, checked with image-cone queries: the
generator's geometry, the PQ index's recall against exact search, its calibration (and
fall-back to the exact scan), where the recall was measured, a user's FAISS index, and
libraries built with the class inverted file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import whyclip.store.vectors.files as files_module
import whyclip.store.vectors.recall_tuning as calibration
from bench.synthetic import EXPECTED, clip_shaped, library_draft, statistics
from whyclip.store import Store
from whyclip.store.vectors.recall_tuning import recall
from whyclip.store.vectors.retrieval import FlatScan
from whyclip.store.vectors.search import exact_search

DIM = 64


@pytest.fixture(scope="module")
def clip():
    return clip_shaped(300, 10, dim=DIM, seed=3)  # 3,000 descriptors


@pytest.fixture
def index_faster(monkeypatch):
    """At 3,000 descriptors the exact scan takes microseconds and would win the timing that
    decides between the index and the scan; these tests are about the index, so its timing
    is made to say it is faster (approximate first, then exact: ms a query)."""
    calls = iter(range(10**6))
    monkeypatch.setattr(calibration, "median_ms", lambda fn, q: 0.1 if next(calls) % 2 == 0 else 1.0)


def _write(home, lib, factory=None, name="synthetic"):
    store = Store.open(home)
    draft = library_draft(lib, name)
    draft.index_factory = factory
    store.write_library(draft)
    return store, store.load(name)


def _image_recall(loaded, lib, n=200, seed=41):
    """recall@10 against exact search for image-cone queries the calibration never saw."""
    images, _ = lib.images(n, seed=seed)
    _, want = exact_search(np.asarray(loaded.vectors), images, 10)
    got = [[h.descriptor_id - loaded.info.first_descriptor_id for h in row] for row in loaded.retrieve(images, 10)]
    return recall(np.array(got), want)


@pytest.mark.parametrize("dim", [64, 512])
def test_the_generator_has_clip_geometry(dim):
    got = statistics(clip_shaped(400, 10, dim=dim, seed=1), n=1500)
    for key, (lo, hi) in EXPECTED.items():
        assert lo <= got[key] <= hi, (key, got[key])
    assert got["matching_cosine"] > got["other_class_cosine"] + 0.08  # images match their own class


def test_image_queries_are_harder_than_the_old_text_side_queries(clip):
    """The reason the calibration moved to image-like queries: an index tuned on text-side
    queries (a class's mean, nudged) promises more than it gives for images."""
    from whyclip.store.method import class_sums
    from whyclip.store.vectors.retrieval import build_class_ivf, tune_probe

    mean = class_sums(clip.vectors, clip.offsets, np.zeros((clip.n_classes, DIM), np.float32))
    ivf = build_class_ivf(clip.vectors, clip.offsets, mean)
    probe, text_recall = tune_probe(ivf, clip.text_queries(100))
    images, _ = clip.images(100, seed=5)
    image_recall = recall(ivf.search(images, 10, probe)[1], exact_search(clip.vectors, images, 10)[1])
    assert text_recall >= 0.95
    assert image_recall < text_recall - 0.1


def test_large_libraries_get_pq_codes_reranked_exactly_with_image_recall(tmp_path, monkeypatch, clip, index_faster):
    monkeypatch.setattr(files_module, "APPROXIMATE_ABOVE", 500)
    store, approx = _write(tmp_path / "a", clip)
    _, exact = _write(tmp_path / "b", clip, "Flat")
    info = approx.info
    assert info.index_factory == f"PQ{DIM // 2}x4fs+rerank"
    assert exact.info.index_factory == "Flat"
    params = info.index_params
    assert params["query_source"] == "proxy"
    assert params["calibrated_on"] == "400 proxy image queries"
    assert params["depth"] >= 50
    assert max(params["recall_by_depth"].values()) >= 0.96
    assert 0.93 <= info.recall_at_10 <= 1.0  # measured on the other half of the proxy queries
    assert _image_recall(approx, clip) >= 0.93  # unseen image-cone queries, against exact search
    assert _image_recall(exact, clip) == 1.0
    folder = store.index_folder(info)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["index_params"] == params
    assert {"pq_fastscan.faiss", "pq_centre.npy", "vectors.npy"} <= {f.name for f in folder.iterdir()}
    fresh = store.load("synthetic")
    assert fresh.files.searcher.index is None  # read on first search, not on load
    fresh.retrieve(clip.vectors[:1], 10)
    assert fresh.files.searcher.index is not None
    assert fresh.files.searcher.depth == params["depth"]
    images, _ = clip.images(5, seed=2)
    for aggregate in ("mean", "centroid", "max"):  # class scores stay exact whatever the index
        np.testing.assert_allclose(approx.scores(images, aggregate), exact.scores(images, aggregate), atol=1e-6)
    (exp,) = approx.explain(images[:1])
    assert exp.retrieval == {
        "exact": False,
        "index": f"PQ{DIM // 2}x4fs+rerank{params['depth']}",
        "recall_at_10": info.recall_at_10,
        "calibrated_on": "400 proxy image queries",
        "note": None,
    }
    assert "approximate, PQ32x4fs+rerank" in exp.to_text()
    assert exp.to_dict()["retrieval"] == exp.retrieval
    assert type(exp).from_dict(exp.to_dict()) == exp


def test_a_tampered_pq_file_is_refused(tmp_path, monkeypatch, clip, index_faster):
    from whyclip.store import StoreError

    monkeypatch.setattr(files_module, "APPROXIMATE_ABOVE", 500)
    store, approx = _write(tmp_path, clip)
    path = store.index_folder(approx.info) / "pq_fastscan.faiss"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="differs from the one built: re-ingest"):
        store.load("synthetic").retrieve(clip.vectors[:1], 10)


def test_it_answers_exactly_when_no_depth_reaches_the_target(tmp_path, clip, index_faster):
    """Two 4-bit codes a vector cannot rank 3,000 descriptors: no depth up to a quarter of
    the library reaches 0.95, so the version answers by the exact scan and says why; the
    same data with 32 codes a vector does not fall back (the control)."""
    store, coarse = _write(tmp_path / "a", clip, "PQ2x4fs+rerank")
    _, fine = _write(tmp_path / "b", clip, "PQ32x4fs+rerank")
    r = coarse.retrieval
    assert r["exact"]
    assert r["recall_at_10"] == 1.0
    assert "< 0.95 at every re-rank depth" in r["note"]
    assert isinstance(coarse.files.searcher, FlatScan)
    assert _image_recall(coarse, clip) == 1.0
    assert max(coarse.info.index_params["recall_by_depth"].values()) < 0.95
    assert not fine.retrieval["exact"]
    assert "exact_fallback" not in fine.info.index_params
    assert "exact scan" in _libraries_table(store)


@pytest.mark.parametrize("factory", ["PQ32x4fs+rerank", "IVF32,Flat", "ClassIVF"])
def test_it_answers_exactly_when_the_index_is_not_faster(tmp_path, monkeypatch, clip, factory):
    times = iter([5.0, 1.0])  # approximate, then exact: ms a query
    monkeypatch.setattr(calibration, "median_ms", lambda fn, q: next(times))
    store, lib = _write(tmp_path, clip, factory)
    assert lib.retrieval["exact"]
    assert "not faster than the exact scan (5.00 ms vs 1.00 ms" in lib.retrieval["note"]
    assert isinstance(lib.files.searcher, FlatScan)
    assert _image_recall(lib, clip) == 1.0
    assert "-> exact scan" in _libraries_table(store)


def _libraries_table(store) -> str:
    from click.testing import CliRunner

    from whyclip.ui.cli.main import cli

    return CliRunner().invoke(cli, ["--home", str(store.home), "libraries", "--wide"]).stdout


def _save_images(store, loaded, images, name="run"):
    from whyclip.store.db.runs import save_run

    return save_run(
        store.engine,
        library_id=loaded.info.id,
        library_name=loaded.info.name,
        name=name,
        dataset="synthetic",
        encoder_key="synthetic",
        paths=[f"{i}.png" for i in range(len(images))],
        shas=[f"{i:064x}" for i in range(len(images))],
        labels=np.zeros(len(images), np.int64),
        vectors=images,
        results={},
        details={},
    )


def test_eval_images_replace_the_proxy_and_are_reported(tmp_path, monkeypatch, clip, index_faster):
    monkeypatch.setattr(files_module, "APPROXIMATE_ABOVE", 500)
    store, lib = _write(tmp_path, clip)
    assert lib.info.retrieval["calibrated_on"] == "400 proxy image queries"
    _save_images(store, lib, clip.images(10, seed=8)[0], "few")  # too few to calibrate on
    assert store.retune_recall("synthetic").index_params["query_source"] == "proxy"
    _save_images(store, lib, clip.images(120, seed=9)[0])
    info = store.retune_recall("synthetic")
    assert info.version == lib.info.version
    assert info.index_params["query_source"] == "eval images"
    assert info.retrieval["calibrated_on"] == "120 eval images"
    assert 0.9 <= info.recall_at_10 <= 1.0
    again = store.load("synthetic")  # the re-calibrated depth is the one used
    assert again.files.searcher.depth == info.index_params["depth"]
    assert again.files.params == info.index_params
    table = _libraries_table(store)
    assert "120 eval images" in table
    assert f"PQ32x4fs+rerank{info.index_params['depth']}" in table
    # a new version of the library calibrates on the eval images of the earlier one
    draft = library_draft(clip)
    assert store.write_library(draft).index_params["calibrated_on"] == "120 eval images"


def test_a_users_faiss_index_gets_its_nprobe_calibrated_on_image_like_queries(tmp_path, clip, index_faster):
    import faiss

    _, lib = _write(tmp_path, clip, "IVF32,Flat")
    params = lib.info.index_params
    assert params["query_source"] == "proxy"
    assert params["nprobe"] in calibration.NPROBES
    ivf = faiss.extract_index_ivf(lib.files.searcher.index)
    assert ivf.nprobe == params["nprobe"]  # applied again on load
    curve = params["recall_by_nprobe"]
    if params["recall_at_10"] >= 0.95:
        assert "warning" not in params
    else:
        assert "below 0.95" in params["warning"]
    assert list(curve)[-1] == str(params["nprobe"])
    assert all(v < 0.96 for v in list(curve.values())[:-1])
    assert lib.retrieval["index"] == f"IVF32,Flat nprobe {params['nprobe']}"


def test_a_low_recall_faiss_index_warns(tmp_path, clip, caplog, index_faster):
    _, lib = _write(tmp_path, clip, "PQ4x4fs")  # 2 bytes a vector, no knob to turn
    assert "below 0.95" in lib.info.index_params["warning"]
    assert lib.info.recall_at_10 < 0.95
    assert "below 0.95" in caplog.text
    assert lib.retrieval["note"] == lib.info.index_params["warning"]


def test_a_class_ivf_library_still_loads_with_its_manifest_parameters(tmp_path, clip, index_faster):
    """Libraries built before the PQ index: ClassIVF with parameters in the manifest and
    none in the row (as some older rows have) load and search as built."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from whyclip.store.db.schema import LibraryRow

    store, lib = _write(tmp_path, clip, "ClassIVF")
    probe = lib.info.index_params["probe"]
    with Session(store.engine) as s, s.begin():
        s.execute(update(LibraryRow).values(index_params=None))
    old = store.load("synthetic")
    assert old.files.searcher.probe == probe
    assert not old.retrieval["exact"]
    hits = old.retrieve(clip.vectors[:3], 10)
    assert [h[0].descriptor_id - old.info.first_descriptor_id for h in hits] == [0, 1, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_answer_as_the_whole_index_does(clip, monkeypatch, workers):
    """The codes cut into shards (an uneven tail that is not a whole 32-code block
    included) and searched side by side give the whole index's candidates, on one thread
    or two; the oracle is FAISS searching the uncut index."""
    import whyclip.store.vectors.pqrerank as pqrerank

    vectors = np.ascontiguousarray(clip.vectors)
    index, centre = pqrerank.build_pq(vectors, pqrerank.default_for(DIM))
    images, _ = clip.images(40, seed=7)
    whole_sims, whole = index.search(images, 300)
    monkeypatch.setattr(pqrerank, "_POOL", None)
    monkeypatch.setattr(pqrerank, "cores", lambda: workers)
    shards = pqrerank.split(index, rows=700)  # 3,000 rows: 5 shards
    assert len(shards) == 5
    assert sum(s.ntotal for _, s in shards) == len(vectors)
    assert [lo % 32 for lo, _ in shards] == [0] * 5
    searcher = pqrerank.PQRerank(vectors, centre, depth=300, _shards=shards)
    got = searcher.candidates(images, 300)
    assert got.shape == whole.shape
    assert (got >= 0).all()
    # equal approximate scores tie at the cut: compare the scores the candidates were chosen by
    sims_of = {}
    for lo, shard in shards:
        s, p = shard.search(images, shard.ntotal)
        for row, (srow, prow) in enumerate(zip(s, p, strict=True)):
            sims_of.update({(row, int(q) + lo): float(v) for v, q in zip(srow, prow, strict=True)})
    for row in range(len(images)):
        np.testing.assert_allclose(
            sorted((sims_of[(row, int(p))] for p in got[row]), reverse=True), whole_sims[row], rtol=1e-6
        )
    assert len({int(p) for row in got for p in row}) > 300  # not one list repeated
    # the exact re-rank of those candidates is the whole index's
    want = pqrerank.rerank(vectors, images, whole, 10)[1]
    assert recall(searcher.search(images, 10)[1], want) >= 0.99
