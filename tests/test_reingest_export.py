"""``whyclip ingest`` of an exported library takes the model from the export's sidecar
when ``--model`` is not given (issue 21, item 8): the folder it names, else a folder of the
same encoder id the store knows, else the model name; a folder gone and known nowhere is one
line naming it and ``--model``; an explicit ``--model`` of another encoder id is said.

The tiny random-weight CLIP (loaded by the same code path as a user's model) where vectors
are compared; the fake encoder where only the choice of model is checked.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.helpers.cli import invoke
from tests.helpers.fakes import FakeEncoder
from whyclip import ingest
from whyclip.store import Store

LIBRARY = {"red circle": ["a round shape", "red colour"], "blue square": ["four corners"], "green triangle": []}


def _export(tmp_path, model) -> tuple:
    """A library built with ``model`` in ``tmp_path/home`` and its export; (home, file, sidecar)."""
    home = tmp_path / "home"
    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    done = invoke("ingest", tmp_path / "lib.json", "-l", "shapes", "-m", model, "--precision", "fp32", home=home)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "shapes-export.csv"
    assert invoke("export", "shapes", "--out", out, home=home).returncode == 0
    return home, out, tmp_path / "shapes-export.csv.meta.json"


def test_reingest_takes_the_model_of_the_sidecar(tmp_path, tiny_model):
    model = shutil.copytree(tiny_model, tmp_path / "tiny")
    home, out, sidecar = _export(tmp_path, model)
    meta = json.loads(sidecar.read_text())
    fresh = tmp_path / "fresh"  # another store: nothing cached, every prompt embedded again
    done = invoke("ingest", out, "--library", "shapes2", "--precision", "fp32", home=fresh)
    assert done.returncode == 0, done.stderr
    assert f"using model '{model}' from {sidecar} (encoder id {meta['encoder_id']})" in done.stderr.splitlines()
    before, after = Store.open(home).load("shapes"), Store.open(fresh).load("shapes2")
    assert after.info.encoder_id == before.info.encoder_id
    np.testing.assert_allclose(after.vectors, before.vectors, atol=1e-6)


def test_a_moved_folder_is_found_by_its_encoder_id(tmp_path, tiny_model):
    model = shutil.copytree(tiny_model, tmp_path / "tiny")
    home, out, sidecar = _export(tmp_path, model)
    elsewhere = shutil.copytree(tiny_model, tmp_path / "elsewhere")  # the same weights: the same encoder id
    done = invoke("ingest", tmp_path / "lib.json", "-l", "other", "-m", elsewhere, home=home)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(model)
    done = invoke("ingest", out, "--library", "shapes2", home=home)
    assert done.returncode == 0, done.stderr
    encoder_id = Store.open(home).library("shapes").encoder_id
    assert (
        f"using model '{elsewhere}': the folder {sidecar} names ('{model}') is gone, and a library in this store "
        f"was built from that one with the same encoder id ({encoder_id})"
    ) in done.stderr.splitlines()
    assert Store.open(home).library("shapes2").encoder_name == str(elsewhere)


def test_a_gone_folder_known_nowhere_is_one_line_naming_it(tmp_path, tiny_model):
    model = shutil.copytree(tiny_model, tmp_path / "tiny")
    _home, out, sidecar = _export(tmp_path, model)
    encoder_id = json.loads(sidecar.read_text())["encoder_id"]
    shutil.rmtree(model)
    done = invoke("ingest", out, "--library", "shapes2", home=tmp_path / "fresh")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"Error: {sidecar} names model '{model}' (encoder id {encoder_id}), a folder that does not exist: pass "
        "--model with the model that built the export (a local folder or a model name)"
    )
    assert "Traceback" not in done.stderr


@pytest.fixture
def loads(monkeypatch):
    """``ingest.load_encoder`` as a fake encoder tagged by the model asked for; the models asked for."""
    asked: list[str | None] = []

    def load(model=None, *args, **kwargs):
        asked.append(model)
        return FakeEncoder(["red", "round"], tag="v2" if model == "other-model" else "v1")

    monkeypatch.setattr(ingest, "load_encoder", load)
    return asked


def test_a_model_name_in_the_sidecar_is_loaded_by_name(tmp_path, loads):
    home, out, _sidecar = _export(tmp_path, "some-model")
    loads.clear()
    done = invoke("ingest", out, "--library", "shapes2", home=home)
    assert done.returncode == 0, done.stderr
    assert loads == ["fake:v1"]  # the encoder name the fake reports, as the sidecar recorded it
    assert "using model 'fake:v1' from" in done.stderr


def test_an_explicit_model_wins_and_a_different_one_is_said(tmp_path, loads):
    home, out, sidecar = _export(tmp_path, "some-model")
    loads.clear()
    done = invoke("ingest", out, "--library", "shapes2", "--model", "other-model", home=home)
    assert done.returncode == 0, done.stderr
    assert loads == ["other-model"]
    assert (
        f"note: --model fake:v2 (encoder id fake-32-v2) is not the model {sidecar} names ('fake:v1', encoder id "
        "fake-32-v1): the vectors will differ from the exported version's"
    ) in done.stderr.splitlines()
    same = invoke("ingest", out, "--library", "shapes3", "--model", "some-model", home=home)
    assert same.returncode == 0, same.stderr
    assert "note: --model" not in same.stderr
