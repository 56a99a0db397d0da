"""Regression tests for two core bugs (written failing, before the fix):

1. A library version deleted while an explanation runs on it must end in the project's
   ``LibraryNotFound`` (one line and a non-zero exit from the CLI, a 404 or 409 JSON body
   from the HTTP API), never a ``KeyError``, a 500 or a dropped connection. The version is
   resolved and loaded first; its descriptor rows are read later (``Library.retrieve``
   looked them up with ``meta[int(i)]``, a KeyError once the rows are gone).
2. ``whyclip gc --cache`` must not delete the bare-descriptor vectors ``whyclip eval``
   cached: every later explain would silently lose its name/description split.

Fake encoder (exact numbers, no model), SQLite, in-process: seconds.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tests.helpers.fakes import FROG_CONCEPTS, FROG_LIBRARY, FakeEncoder, planted_png
from tests.helpers.planted import CONCEPTS as EVAL_CONCEPTS
from tests.helpers.planted import LIBRARY as EVAL_LIBRARY
from tests.helpers.planted import write_dataset
from whyclip.ingest import ingest_library, read_image
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store import Store
from whyclip.store.db.lifecycle import delete_versions
from whyclip.store.errors import LibraryNotFound
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.cli.main import cli

# -- 1. delete during explain --------------------------------------------------------------

CONCEPTS, LIBRARY = FROG_CONCEPTS, FROG_LIBRARY
FROG = planted_png(["protruding eyes", "bright green colour"])
KEY = "s3cret-key-for-tests"


class DeletingEncoder(FakeEncoder):
    """The fake encoder; once ``armed``, embedding images first deletes library 'frogs' v1
    through a store of its own (as another process would): the version is then gone between
    being resolved and loaded and being explained."""

    def __init__(self, home, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.home = home
        self.armed = False

    def embed_images(self, images, progress=None):
        if self.armed:
            self.armed = False
            delete_versions(Store.open(self.home), "frogs", 1)
        return super().embed_images(images, progress)


@pytest.fixture
def frogs(tmp_path):
    """Library 'frogs' v1 (fake encoder) in the test's home ($WHYCLIP_HOME)."""
    home = tmp_path / "home"
    store = Store.open(home)
    enc = DeletingEncoder(home, CONCEPTS)
    ingest_library(store, LIBRARY, "frogs", enc)
    return store, enc, home


@pytest.mark.parametrize(
    ("retrieve", "warm"),
    [(10, False), (10, True), (0, False)],
    ids=["retrieve10-cold", "retrieve10-warm", "retrieve0-cold"],
)
def test_a_version_deleted_after_load_gives_library_not_found(frogs, retrieve, warm):
    """Store.load (what the CLI and the service's Resources.library do), delete the version
    through the lifecycle, then explain: LibraryNotFound. ``warm``: the loaded Library had
    explained once before the delete (as a service's cached version has)."""
    store, enc, _ = frogs
    lib = store.load("frogs")
    x = enc.embed_images([read_image_bytes(FROG)])[0]
    if warm:
        lib.explain(x, ["frog"], retrieve=retrieve)
    delete_versions(store, "frogs", 1)
    with pytest.raises(LibraryNotFound, match="deleted"):
        lib.explain(x, ["frog"], retrieve=retrieve)


@pytest.mark.slow  # a fresh process
def test_a_version_deleted_by_another_process(frogs):
    """The same with a real second process: 'whyclip delete' in a subprocess, between this
    process loading the version and explaining with it."""
    import subprocess
    import sys

    store, enc, home = frogs
    lib = store.load("frogs")
    x = enc.embed_images([read_image_bytes(FROG)])[0]
    done = subprocess.run(
        [sys.executable, "-m", "whyclip.ui.cli.main", "--home", str(home), "delete", "frogs", "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(LibraryNotFound, match="deleted"):
        lib.explain(x, ["frog"], retrieve=3)


def test_cli_explain_of_a_version_deleted_mid_run_is_one_line(frogs, tmp_path, monkeypatch):
    """whyclip explain loads the version, then embeds the image (the version is deleted
    meanwhile), then explains: one 'Error:' line on stderr, exit 1, no traceback."""
    from whyclip import ingest

    _, enc, home = frogs
    monkeypatch.setattr(ingest, "load_encoder", lambda *a, **k: enc)
    image = tmp_path / "frog.png"
    image.write_bytes(FROG)
    enc.armed = True
    result = CliRunner().invoke(
        cli, ["--home", str(home), "explain", str(image), "--library", "frogs", "--retrieve", "10"]
    )
    assert not enc.armed, "the version was not deleted during the run"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "deleted" in lines[0], result.stderr


@pytest.fixture
def service(frogs, monkeypatch):
    from whyclip import ingest

    _, enc, _ = frogs
    monkeypatch.setattr(ingest, "load_encoder", lambda *a, **k: enc)
    monkeypatch.setenv("WHYCLIP_API_KEYS", KEY)
    # raise_server_exceptions=False: see the status and body a client gets (a KeyError is a 500)
    with TestClient(create_app(ServiceSettings()), raise_server_exceptions=False) as client:
        yield client, enc


def post_explain(client, retrieve=10):
    return client.post(
        "/v1/explain",
        files=[("image", ("frog.png", FROG, "image/png"))],
        data={"library": "frogs", "retrieve": str(retrieve)},
    )


def assert_clean_error(r):
    assert r.status_code in (404, 409), f"{r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    assert "error" in json.dumps(r.json())


def test_api_explain_after_another_process_deleted_the_cached_version(frogs, service):
    """Explain once (the service caches the loaded v1), delete v1 through the store (not the
    HTTP DELETE route, which forgets the cache), explain again: 404/409 JSON, not 500."""
    client, _ = service
    first = post_explain(client)
    assert first.status_code == 200, first.text
    delete_versions(Store.open(frogs[2]), "frogs", 1)
    assert_clean_error(post_explain(client))


def test_api_explain_of_a_version_deleted_mid_request(service):
    """The version is deleted after the request resolved (and cached) it and before the
    explanation reads its descriptor rows: 404/409 JSON, not 500."""
    client, enc = service
    assert post_explain(client).status_code == 200  # the service now holds v1 loaded
    enc.armed = True
    r = post_explain(client)
    assert not enc.armed, "the version was not deleted during the request"
    assert_clean_error(r)


def test_api_retrieve_of_a_version_deleted_mid_request(service):
    """The same for library-wide retrieval: 404 JSON, not a 500."""
    client, enc = service

    def post():
        return client.post(
            "/v1/retrieve", files=[("image", ("frog.png", FROG, "image/png"))], data={"library": "frogs"}
        )

    assert post().status_code == 200
    enc.armed = True
    r = post()
    assert not enc.armed, "the version was not deleted during the request"
    assert_clean_error(r)


def read_image_bytes(data: bytes):
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# -- 2. gc --cache, then explain -------------------------------------------------------------

IMAGE = ("tree frog", "f1.png")


def test_gc_cache_keeps_the_name_description_split(tmp_path):
    """ingest (4 classes, the paper's template: a prompt is not its bare descriptor), eval
    (embeds and caches the bare descriptors), explain: the split is there; gc --cache;
    explain again: the split must still be there."""
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(EVAL_CONCEPTS, noise=0.01)
    data = write_dataset(tmp_path / "data")
    ingest_library(store, EVAL_LIBRARY, "paper", enc, template="paper")
    run_eval(store, store.load("paper"), read_dataset(data), enc, name="r")
    x = enc.embed_images([read_image(data / IMAGE[0] / IMAGE[1])])[0]

    def explain():
        lib = store.load("paper")
        (exp,) = lib.explain(x, ["f1"], top=4, name_split=lib.bare_scorer(enc.cache_key))
        return exp

    before = explain()
    assert all(c.name_share is not None for c in before.classes)
    assert before.name_description["coefficients"]
    gc = CliRunner().invoke(
        cli, ["--home", str(tmp_path / "home"), "gc", "--cache"]
    )  # collect_garbage(store, cache=True)
    assert gc.exit_code == 0, gc.output
    after = explain()
    assert "coefficients" in (after.name_description or {}), f"{gc.stdout.strip()}; then: {after.name_description}"
    assert [c.name_share for c in after.classes] == pytest.approx([c.name_share for c in before.classes])


def test_a_deleted_version_whose_approximate_index_was_not_read_yet(tmp_path, monkeypatch):
    """A PQ index is read on first search: a version deleted between its load and that first
    search must end in LibraryNotFound too, not a FileNotFoundError (a 500 over HTTP)."""
    from bench.synthetic import clip_shaped, library_draft
    from whyclip.store.vectors import recall_tuning

    calls = iter(range(10**6))  # the index is timed faster than the scan (else tuning keeps the scan)
    monkeypatch.setattr(recall_tuning, "median_ms", lambda fn, q: 0.1 if next(calls) % 2 == 0 else 1.0)

    clip = clip_shaped(40, per_class=10, dim=64, seed=3)
    store = Store.open(tmp_path / "home")
    draft = library_draft(clip, "synthetic")
    draft.index_factory = "PQ32x4fs+rerank"
    store.write_library(draft)
    lib = store.load("synthetic")
    assert lib.files.searcher.index is None  # not read yet
    delete_versions(store, "synthetic", 1)
    images, _ = clip.images(1, seed=2)
    with pytest.raises(LibraryNotFound, match="deleted"):
        lib.explain(images, ["x"], retrieve=5)
