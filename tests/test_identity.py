"""Encoder identity from content: the id follows the weights, not the folder or the
transformers version, and stores written under the old path-dependent ids keep working
(accepted on read, renamed on the first write, never re-embedded)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.helpers.cli import invoke
from tests.helpers.fakes import FakeEncoder
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.encoder.fingerprint import is_legacy_id
from whyclip.ingest.encoder.legacy_ids import adopt_legacy_ids, check_library_encoder
from whyclip.ingest.images import PIXEL_RULES
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store import Store
from whyclip.store.db.encoder_ids import rename_encoder_id
from whyclip.store.db.schema import EmbeddingRow, EvalRunRow, LibraryRow
from whyclip.store.errors import EncoderMismatch

LEGACY = "clip-32-0123456789abcdef"  # an id in the old format, of no model's making


def whyclip(*args: str, home):
    return invoke(*args, home=home)


def keys(store: Store) -> dict[str, set[str]]:
    with Session(store.engine) as s:
        return {
            "libraries": set(s.scalars(select(LibraryRow.encoder_id))),
            "cache": set(s.scalars(select(EmbeddingRow.encoder_key))),
            "runs": set(s.scalars(select(EvalRunRow.encoder_key))),
        }


class Reversed(FakeEncoder):
    """Another encoder of the same dimension: every vector's axes reversed."""

    def embed_texts(self, texts, progress=None):
        vectors, norms = super().embed_texts(texts, progress)
        return np.ascontiguousarray(vectors[:, ::-1]), norms


# -- the id -------------------------------------------------------------------------------


def test_the_id_follows_the_weights_not_the_folder_or_the_config_bookkeeping(tiny_model, tmp_path):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.encoder.testmodel import make_test_model

    first = load_encoder(str(tiny_model), precision="fp32")
    copy = shutil.copytree(tiny_model, tmp_path / "elsewhere" / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["_name_or_path"], config["transformers_version"] = "/some/old/place", "4.0.0"
    (copy / "config.json").write_text(json.dumps(config))
    moved = load_encoder(str(copy), precision="fp32")
    assert moved.id == first.id
    assert moved.name != first.name
    assert first.id.startswith("clip-32-w2-")
    assert not is_legacy_id(first.id)
    other = load_encoder(str(make_test_model(tmp_path / "seed1", seed=1)), precision="fp32")
    assert other.id != first.id
    assert other.id.startswith("clip-32-w2-")
    # the old ids depended on the folder: recognisable, and reproducible from a path
    legacy = first.legacy_ids()
    assert legacy
    assert all(is_legacy_id(i) for i in legacy)
    assert first.legacy_ids(["/a"]) - legacy != set()  # another path, another old id
    assert moved.legacy_ids([str(tiny_model)]) >= {first.legacy_fingerprint(str(tiny_model))}


# -- old ids in a store (the fake encoder: exact vectors, no model) -------------------------------


@pytest.fixture
def legacy_world(tmp_path):
    """A library, its cache rows, an eval run and its image cache, all under an old id."""
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(CONCEPTS, noise=0.01)
    enc.info = type(enc.info)(id="clip-32-w2-feedfacefeedface", name="fake", dim=32, logit_scale=100.0)
    enc.cache_key = f"{enc.info.id}/fp32"
    ingest_library(store, LIBRARY, "planted", enc, template="bare")
    run_eval(store, store.load("planted"), read_dataset(write_dataset(tmp_path / "data")), enc, name="r1")
    rename_encoder_id(store.engine, enc.info.id, LEGACY)
    assert keys(store) == {
        "libraries": {LEGACY},
        "cache": {f"{LEGACY}/fp32", f"{LEGACY}/fp32/image/{PIXEL_RULES}"},
        "runs": {f"{LEGACY}/fp32"},
    }
    return store, enc


def test_a_read_accepts_an_old_id_by_content_and_writes_nothing(legacy_world):
    store, enc = legacy_world
    lib = store.load("planted")
    check_library_encoder(lib, enc)
    assert lib.info.encoder_id == enc.info.id
    assert keys(store)["libraries"] == {LEGACY}  # nothing written
    with pytest.raises(EncoderMismatch, match="was built with encoder"):
        check_library_encoder(store.load("planted"), Reversed(CONCEPTS, noise=0.01))


def test_a_write_renames_every_row_of_the_old_id_once(legacy_world):
    store, enc = legacy_world
    with Session(store.engine) as s:  # the new id already has one prompt: that row is kept
        row = s.scalars(select(EmbeddingRow).where(EmbeddingRow.encoder_key == f"{LEGACY}/fp32")).first()
        sha, n_rows, kept_vector = row.text_sha256, s.query(EmbeddingRow).count(), row.vector[::-1]
        s.add(EmbeddingRow(encoder_key=enc.cache_key, text_sha256=sha, vector=kept_vector, norm=7.0))
        s.commit()
    check_library_encoder(store.load("planted"), enc, store)
    assert keys(store) == {
        "libraries": {enc.info.id},
        "cache": {enc.cache_key, f"{enc.cache_key}/image/{PIXEL_RULES}"},
        "runs": {enc.cache_key},
    }
    with Session(store.engine) as s:
        assert s.query(EmbeddingRow).count() == n_rows
        kept = s.scalars(select(EmbeddingRow).where(EmbeddingRow.text_sha256 == sha)).one()
        assert (kept.vector, kept.norm) == (kept_vector, 7.0)
    before = len(enc.embedded)
    report = ingest_library(store, LIBRARY, "planted", enc, template="bare")  # nothing left to embed
    assert report.n_embedded == 0
    assert report.n_reused == 15
    assert len(enc.embedded) == before


def test_an_ingest_adopts_only_the_old_ids_of_its_own_encoder(legacy_world):
    store, enc = legacy_world
    assert adopt_legacy_ids(store, Reversed(CONCEPTS, noise=0.01)) == []
    assert keys(store)["libraries"] == {LEGACY}
    assert adopt_legacy_ids(store, enc) == [LEGACY]
    assert keys(store)["libraries"] == {enc.info.id}
    assert not any(LEGACY in k for k in keys(store)["cache"])


# -- through the command line, with the tiny CLIP, in fresh processes ----------------------------


@pytest.fixture
def moved_model(tiny_model, tmp_path):
    """A library ingested with a model folder that was then moved (copied, original deleted)."""
    library = tmp_path / "lib.json"
    library.write_text(json.dumps({"tree frog": ["green skin", "big eyes"], "banana": ["yellow peel"]}))
    original = shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    home = tmp_path / "home"
    r = whyclip("ingest", str(library), "--library", "lib", "--model", str(original), home=home)
    assert r.returncode == 0, r.stderr
    moved = shutil.copytree(original, tmp_path / "moved" / "tiny")
    shutil.rmtree(original)
    image = tmp_path / "frog.png"
    Image.new("RGB", (40, 30), (40, 160, 60)).save(image)
    return home, library, original, moved, image


def test_a_moved_model_folder_keeps_its_libraries_and_cache(moved_model):
    home, library, _, moved, image = moved_model
    r = whyclip("explain", str(image), "--library", "lib", "--model", str(moved), "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["library"] == "lib"
    r = whyclip("ingest", str(library), "--library", "lib", "--model", str(moved), home=home)
    assert r.returncode == 0, r.stderr
    assert "(0 embedded, 5 from the cache)" in r.stdout  # 3 descriptor prompts, 2 baseline prompts


@pytest.mark.parametrize("recorded", ["as-ingested", "unreproducible"])
def test_a_store_under_old_ids_works_with_a_moved_model(moved_model, recorded):
    """``as-ingested``: the old id of the original folder (a candidate reproduces it);
    ``unreproducible``: an old id no candidate gives (a moved folder and an upgraded
    transformers), accepted because the stored vectors are this model's."""
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    home, library, original, moved, image = moved_model
    store = Store.open(home, create=False)
    encoder = load_encoder(str(moved), precision="fp32")
    old = encoder.legacy_fingerprint(str(original) if recorded == "as-ingested" else "/gone/with/old/transformers")
    assert is_legacy_id(old)
    assert (old in encoder.legacy_ids([str(original)])) == (recorded == "as-ingested")
    rename_encoder_id(store.engine, encoder.id, old)
    r = whyclip("explain", str(image), "--library", "lib", "--model", str(moved), "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert keys(store)["libraries"] == {old}  # a read writes nothing
    r = whyclip("ingest", str(library), "--library", "lib", "--model", str(moved), home=home)
    assert r.returncode == 0, r.stderr
    assert "(0 embedded, 5 from the cache)" in r.stdout
    assert keys(store)["libraries"] == {encoder.id}
    assert all(k.startswith(encoder.id + "/") for k in keys(store)["cache"])
