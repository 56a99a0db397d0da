"""End to end with a tiny random-weight CLIP, loaded through the same path as a real
model: ingest the paper's pets descriptors, explain from a new process (slow tier), check the
stored vectors and ids, and refuse a different encoder."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.helpers import shared_file
from tests.helpers.cli import fresh, invoke
from whyclip.store.method.templates import Template


def whyclip(*args: str, home):
    """The CLI in this process (the model loads as for a user; nothing is faked)."""
    return invoke(*args, home=home)


def whyclip_fresh(*args: str, home):
    """The CLI in a fresh Python process, as a user runs it."""
    return fresh([sys.executable, "-m", "whyclip.ui.cli.main", "--home", str(home)], *args)


@pytest.fixture(scope="module")
def pets_store(tiny_model, tmp_path_factory):
    pets = shared_file("descriptors_pets.json")
    home = tmp_path_factory.mktemp("pets-home")
    r = whyclip("ingest", str(pets), "--library", "pets", "--model", str(tiny_model), home=home)
    assert r.returncode == 0, r.stderr
    assert "37 classes, 246 descriptors" in r.stdout
    image = home.parent / "cat.png"
    Image.new("RGB", (300, 200), (200, 120, 40)).save(image)
    return home, image


@pytest.mark.slow  # a fresh process: what ingest stored is all it has
def test_explain_from_a_new_process(pets_store):
    home, image = pets_store
    r = whyclip_fresh("explain", str(image), "--library", "pets", "--json", "--top", "3", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["library"] == "pets"
    assert len(out["classes"]) == 3
    assert len(out["retrieved"]) == 10
    pets = json.loads(shared_file("descriptors_pets.json").read_text())
    for c in out["classes"]:
        assert {d["descriptor"] for d in c["descriptors"]} == set(pets[c["class"]])
        assert c["score"] == pytest.approx(np.mean([d["similarity"] for d in c["descriptors"]]), abs=1e-5)
    assert 0 < sum(c["probability"] for c in out["classes"]) <= 1 + 1e-9
    sims = [r["similarity"] for r in out["retrieved"]]
    assert sims == sorted(sims, reverse=True)


def test_vectors_unit_norm_and_faiss_ids_map_to_their_rows(pets_store, tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store import Store
    from whyclip.store.db.schema import ClassRow, DescriptorRow

    home, _ = pets_store
    store = Store.open(home, create=False)
    lib = store.load("pets")
    np.testing.assert_allclose(np.linalg.norm(lib.vectors, axis=1), 1.0, atol=1e-5)
    assert len(lib.ids) == lib.info.n_descriptors == 246
    with Session(store.engine) as s:
        rows = {r.id: r for r in s.scalars(select(DescriptorRow).where(DescriptorRow.library_id == lib.info.id))}
        classes = {c.id: c for c in s.scalars(select(ClassRow).where(ClassRow.library_id == lib.info.id))}
    offsets = lib.matrices.offsets
    for row_index, descriptor_id in enumerate(lib.ids):
        d = rows[int(descriptor_id)]
        position = int(np.searchsorted(offsets, row_index, side="right") - 1)
        assert classes[d.class_id].position == position
        assert d.position == row_index - offsets[position]
    # the stored vector of a sample of rows is the embedding of that row's prompt
    encoder = load_encoder(str(tiny_model))
    sample = lib.ids[::25]
    prompts = [rows[int(i)].prompt for i in sample]  # stored exactly as embedded
    fresh, norms = encoder.embed_texts(prompts)
    stored = lib.vectors[::25]
    np.testing.assert_allclose(np.sum(fresh * stored, axis=1), 1.0, atol=1e-4)
    # bf16 (automatic on capable CPUs) rounds a vector differently with other prompts beside it
    tolerance = 1e-4 if encoder.precision == "fp32" else 3e-3
    np.testing.assert_allclose(norms, lib.files.norms[::25], rtol=tolerance)
    assert prompts[0].startswith("Abyssinian, which")
    assert prompts[0] == Template("paper").build(
        classes[rows[int(lib.ids[0])].class_id].name, rows[int(lib.ids[0])].text
    )
    assert lib.info.prompt_rule == "paper/1"


def test_a_library_refuses_another_encoder(pets_store, tmp_path):
    from whyclip.ingest.encoder.testmodel import make_test_model

    home, image = pets_store
    other = make_test_model(tmp_path / "other", seed=1)
    r = whyclip("explain", str(image), "--library", "pets", "--model", str(other), home=home)
    assert r.returncode == 1
    assert "was built with encoder" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_encoder_restores_order_after_length_sorting(tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="fp32")
    texts = ["a", "tree frog, which has bright green colour and very long sticky toes", "dog", "a photo of a cat."]
    batch, norms = enc.embed_texts(texts)
    assert batch.dtype == np.float32
    assert batch.shape == (4, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    for text, vec, norm in zip(texts, batch, norms, strict=True):
        alone, alone_norm = enc.embed_texts([text])
        assert float(alone[0] @ vec) > 0.9999
        assert alone_norm[0] == pytest.approx(norm, rel=1e-4)
    assert enc.count_tokens(["a photo of a cat."])[0] < len("a photo of a cat.")
    assert enc.logit_scale == pytest.approx(np.exp(2.6592), rel=1e-3)


def test_low_precision_is_checked_against_fp32_and_falls_back(tiny_model, monkeypatch, caplog):
    import whyclip.ingest.encoder.clip_encoder as encoder_module

    texts = [f"a photo of a {w} frog" for w in ("green", "red", "tiny", "spotted", "tree")]
    fp32 = encoder_module.load_encoder(str(tiny_model), precision="fp32")
    ref, _ = fp32.embed_texts(texts)
    low = encoder_module.load_encoder(str(tiny_model), precision="bf16")
    if low.precision != "bf16":
        pytest.skip("this CPU has no native bf16")
    vectors, _ = low.embed_texts(texts)
    assert low.checked["text"] >= 0.999
    assert low.precision == "bf16"
    assert np.min(np.sum(ref * vectors, axis=1)) >= 0.999
    assert low.cache_key.endswith("/bf16")
    assert low.cache_key != fp32.cache_key
    monkeypatch.setattr(encoder_module, "MIN_COSINE", 1.5)  # nothing can pass: must fall back
    strict = encoder_module.load_encoder(str(tiny_model), precision="bf16")
    with caplog.at_level("WARNING"):
        vectors, _ = strict.embed_texts(texts)
    # precision is settled per modality: only the text tower ran, and it fell back
    assert strict.precisions["text"] == "fp32"
    assert "falling back to fp32" in caplog.text
    np.testing.assert_allclose(vectors, ref, atol=1e-5)


def test_model_load_errors_say_what_to_do(tmp_path):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist: pass --model PATH"):
        load_encoder(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_encoder(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="--model PATH"):  # offline in tests: no hub
        load_encoder("clip-ViT-B-32-not-cached")


def test_demo_runs_on_the_tiny_model(tiny_model, tmp_path):
    home = tmp_path / "demo-home"
    r = whyclip("demo", "--model", str(tiny_model), home=home)
    assert r.returncode == 0, r.stderr
    assert "tree frog vs" in r.stdout or "vs tree frog" in r.stdout
    assert "S(" in r.stdout
    assert " explain YOUR_IMAGE.jpg --library demo --model " in r.stdout
    again = whyclip("demo", "--model", str(tiny_model), home=home)  # reuses the library
    assert again.returncode == 0
    libs = json.loads(whyclip("libraries", "--json", home=home).stdout)
    assert [(i["name"], i["version"], i["n_classes"]) for i in libs] == [("demo", 1, 22)]


def test_the_demo_hints_run_as_printed(tiny_model, tmp_path):
    """The "Next:" commands carry the user's --home and --model (issue 21, item 15): the
    second one, pasted as printed, explains a sample from that store with that model."""
    home = tmp_path / "my home"  # a space: the hint must quote it
    r = whyclip("demo", "--model", str(tiny_model), home=home)
    assert r.returncode == 0, r.stderr
    hints = r.stdout.split("Next:\n", 1)[1].splitlines()
    assert all(h.strip().startswith(f"whyclip --home {shlex.quote(str(home))} ") for h in hints)
    assert all(f"--model {tiny_model}" in h for h in hints[:3])
    args = shlex.split(hints[1])
    assert args[:3] == ["whyclip", "--home", str(home)]
    done = invoke(*args[1:])  # the global options as printed
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["contrast"]["a"] in ("tree frog", "tailed frog")


def test_demo_without_a_model_fails_clearly_and_writes_nothing(tmp_path):
    home = tmp_path / "nothing"
    r = whyclip("demo", home=home)
    assert r.returncode == 1
    assert "--model" in r.stderr
    assert "Traceback" not in r.stderr
    assert not home.exists()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx512f avx512_bf16 sse2", True),
        ("fpu amx_bf16 amx_tile", True),
        ("fpu avx512f avx512bw avx2", False),
        ("", False),
    ],
)
def test_without_onednns_check_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path, flags, native):
    """Where a torch build lacks oneDNN's internal bf16 check, the CPU's flags answer (no
    AttributeError): only the bf16 instructions count, not AVX-512 alone."""
    import types

    import torch

    from whyclip.ingest.encoder import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "Path", lambda _: cpuinfo)
    monkeypatch.setattr(torch, "ops", types.SimpleNamespace())  # a build without oneDNN's internal op
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() is native
    finally:
        monkeypatch.undo()
        precision.cpu_has_native_bf16.cache_clear()
