"""The fast paths of issue 13 keep the vectors and the behaviour: the precision verdict is
checked once per weights and platform and then read from the store; explain loads only the
image tower and no sentence-transformers; the weights file gives the model's content id;
one multi-file ingest makes the libraries separate ingests make; images decoded in a
background thread give the same vectors in the same order; two threads sharing an encoder
settle its precision once per modality."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers import ROOT

PROMPTS = [
    "tree frog, which has bright green skin",
    "tree frog, which has big round eyes",
    "banana, which is yellow",
    "a photo of a banana.",
    "stop sign, which has a red octagon",
    "a photo of a stop sign.",
]


def picture(i: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(i)
    small = rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def low_precision(monkeypatch, precision: str = "bf16") -> None:
    """Let this CPU run a lower precision whether or not it has native bf16 (slow, correct)."""
    import whyclip.ingest.encoder.clip_encoder as encoder_module

    monkeypatch.setattr(encoder_module, "resolve_precision", lambda p, device: precision)


# -- the precision verdict --------------------------------------------------------------------


def test_the_text_check_runs_once_then_the_store_verdict_stands_for_it(store, tiny_model, tmp_path):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.encoder.testmodel import make_test_model
    from whyclip.store.db.precision_verdicts import StoreVerdicts

    book = StoreVerdicts(store)
    first = load_encoder(str(tiny_model), precision="fp32", verdicts=book)
    v1, _ = first.embed_texts(PROMPTS)
    assert first.checks_run == 1  # the fp32 prefix path against the plain path
    (row,) = book.all()
    assert (row["encoder_id"], row["modality"], row["precision"], row["path"], row["passed"]) == (
        first.id,
        "text",
        "fp32",
        "prefix",
        True,
    )
    assert row["cosine"] == pytest.approx(first.checked["text"])
    assert "torch" in row["platform"]

    again = load_encoder(str(tiny_model), precision="fp32", verdicts=book)
    v2, _ = again.embed_texts(PROMPTS)
    assert again.checks_run == 0
    assert again.checked["text"] == pytest.approx(row["cosine"])
    assert again._text is not None  # the verdict said the prefix path is good: it is used
    np.testing.assert_allclose(v1, v2, atol=1e-6)

    other = load_encoder(str(make_test_model(tmp_path / "seed1", seed=1)), precision="fp32", verdicts=book)
    other.embed_texts(PROMPTS)
    assert other.id != first.id
    assert other.checks_run == 1

    assert book.forget(first.id) == 1  # the control: without its verdict, the check runs again
    control = load_encoder(str(tiny_model), precision="fp32", verdicts=book)
    control.embed_texts(PROMPTS)
    assert control.checks_run == 1
    assert len(book.all()) == 2


def test_a_failed_verdict_is_remembered_and_the_next_process_takes_the_fallback_at_once(store, tiny_model, monkeypatch):
    from whyclip.ingest.encoder import clip_encoder as encoder_module
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store.db.precision_verdicts import StoreVerdicts

    book = StoreVerdicts(store)
    monkeypatch.setattr(encoder_module, "PREFIX_MIN_COSINE", 1.5)  # no cosine passes: the prefix path fails
    first = load_encoder(str(tiny_model), precision="fp32", verdicts=book)
    first.embed_texts(PROMPTS)
    assert first.checks_run == 1
    assert first._text is None
    monkeypatch.setattr(encoder_module, "PREFIX_MIN_COSINE", 0.9999)  # the verdict, not the floor, decides now
    second = load_encoder(str(tiny_model), precision="fp32", verdicts=book)
    second.embed_texts(PROMPTS)
    assert second.checks_run == 0
    assert second._text is None
    assert book.all()[0]["passed"] is False


def test_a_stored_image_verdict_converts_the_image_tower_once_and_keeps_no_fp32_copy(store, tiny_model, monkeypatch):
    import torch

    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store.db.precision_verdicts import StoreVerdicts

    low_precision(monkeypatch)
    book = StoreVerdicts(store)
    images = [picture(i) for i in range(3)]
    first = load_encoder(str(tiny_model), verdicts=book)
    a, _ = first.embed_images(images)
    assert first.checks_run == 1
    assert first.precisions["image"] == "bf16"
    assert "image" not in first._st.towers  # the fp32 reference tower is dropped after the check
    second = load_encoder(str(tiny_model), verdicts=book)
    b, _ = second.embed_images(images)
    assert second.checks_run == 0
    assert second._st.towers == {}
    assert next(second._fast.towers["image"].parameters()).dtype == torch.bfloat16
    assert second.loaded_towers == {"image"}
    np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    ref, _ = load_encoder(str(tiny_model), precision="fp32").embed_images(images)
    assert float(np.min(np.sum(ref * b, axis=1))) > 0.99
    assert not np.array_equal(ref, b)


def test_the_verdict_key_names_weights_precision_path_rule_and_platform(tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store.db.precision_verdicts import key_sha256

    enc = load_encoder(str(tiny_model), precision="fp32")
    key = enc.verdict_key("image", "bf16", "plain")
    assert set(key) == {"encoder_id", "modality", "precision", "path", "rule", "platform"}
    assert key["encoder_id"] == enc.id
    changed = [key_sha256({**key, field: key[field] + "x"}) for field in key]
    assert len({key_sha256(key), *changed}) == len(key) + 1  # every field changes the key


# -- loading only what a command needs -----------------------------------------------------


def test_images_load_only_the_image_tower_and_give_sentence_transformers_vectors(tiny_model):
    from sentence_transformers import SentenceTransformer

    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="fp32")
    assert enc.loaded_towers == set()  # nothing loaded for the id, dim and logit scale
    images = [picture(i) for i in range(4)]
    vectors, norms = enc.embed_images(images)
    assert enc.loaded_towers == {"image"}
    tower = enc._st.towers["image"]
    assert type(tower).__name__ == "VisionTower"
    assert not hasattr(tower, "text_model")
    assert not any(name.startswith("text") for name, _ in tower.named_parameters())
    ref = SentenceTransformer(str(tiny_model), device="cpu").encode(images)  # the path whyclip took before
    np.testing.assert_allclose(vectors * norms[:, None], ref, rtol=1e-5, atol=1e-6)


def test_a_sentence_transformers_clip_folder_loads_without_sentence_transformers(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from whyclip.ingest.encoder.clip_encoder import load_encoder

    SentenceTransformer(str(tiny_model), device="cpu").save(str(tmp_path / "st"))  # modules.json, one CLIP module
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "modules.json").write_text(
        json.dumps([{"idx": 0, "path": "", "type": "x"}, {"idx": 1, "path": "1", "type": "y"}])
    )
    enc, ref = load_encoder(str(tmp_path / "st"), precision="fp32"), load_encoder(str(tiny_model), precision="fp32")
    assert enc.backend == "transformers"
    assert enc.id == ref.id
    np.testing.assert_array_equal(enc.embed_images([picture(3)])[0], ref.embed_images([picture(3)])[0])
    from whyclip.ingest.encoder.clipmodel import clip_folder

    assert clip_folder(tmp_path / "two") is None  # not one CLIP module: sentence-transformers loads it


def test_the_weights_file_gives_the_loaded_models_content_id(tiny_model, tmp_path):
    import torch
    from transformers import CLIPModel

    from whyclip.ingest.encoder.fingerprint import content_fingerprint, file_fingerprint, safetensors_tensors

    model = CLIPModel.from_pretrained(tiny_model, dtype=torch.float32)
    assert file_fingerprint(model.config, safetensors_tensors(tiny_model)) == content_fingerprint(model)
    half = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(half)  # bf16 on disk, read back as float32
    again = CLIPModel.from_pretrained(half, dtype=torch.float32)
    assert file_fingerprint(again.config, safetensors_tensors(half)) == content_fingerprint(again)
    assert content_fingerprint(again) != content_fingerprint(CLIPModel.from_pretrained(tiny_model))


def _ingested_home(tiny_model, tmp_path) -> Path:
    from whyclip.ui.cli.main import cli

    home = tmp_path / "home"
    lib = tmp_path / "lib.json"
    lib.write_text(json.dumps({"tree frog": ["bright green skin"], "banana": ["yellow curved peel"]}))
    r = CliRunner().invoke(
        cli,
        [
            "--home",
            str(home),
            "ingest",
            str(lib),
            "--library",
            "lib",
            "--model",
            str(tiny_model),
            "--precision",
            "fp32",
        ],
    )
    assert r.exit_code == 0, r.output
    return home


@pytest.mark.slow  # a fresh process
def test_explain_in_a_fresh_process_imports_no_sentence_transformers_and_loads_no_text_tower(tiny_model, tmp_path):
    home = _ingested_home(tiny_model, tmp_path)
    picture(0).save(tmp_path / "a.png")
    code = f"""
import json, sys
from whyclip.ui.cli.main import cli
import whyclip.ingest.encoder.clip_encoder as enc_module
seen = []
real = enc_module.ClipEncoder.embed_images
def spy(self, images, progress=None):
    out = real(self, images, progress)
    seen.append(sorted(self.loaded_towers))
    return out
enc_module.ClipEncoder.embed_images = spy
try:
    args = ["--home", {str(home)!r}, "explain", {str(tmp_path / "a.png")!r}, "--library", "lib", "--json"]
    cli.main(args, standalone_mode=False)
finally:
    loaded = {{m: m in sys.modules for m in ("sentence_transformers", "sklearn")}}
    answer = {{"st": loaded["sentence_transformers"], "sklearn": loaded["sklearn"], "towers": seen}}
    print(json.dumps(answer), file=sys.stderr)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stderr.strip().splitlines()[-1])
    assert found == {"st": False, "sklearn": False, "towers": [["image"]]}
    assert json.loads(out.stdout.splitlines()[0])["image"].endswith("a.png")


# -- multi-file ingest ------------------------------------------------------------------------


def test_one_ingest_of_several_files_makes_the_libraries_separate_ingests_make(tiny_model, tmp_path):
    from whyclip.store import Store
    from whyclip.ui.cli.main import cli

    files = []
    for name, lib in (
        ("birds", {"owl": ["big round eyes", "brown feathers"], "crow": ["black feathers"]}),
        ("fruit", {"banana": ["yellow curved peel"], "cherry": ["small red fruit", "long stem"]}),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(lib))
        files.append(path)
    model = ["--model", str(tiny_model), "--precision", "fp32"]
    together = tmp_path / "together"
    r = CliRunner().invoke(cli, ["--home", str(together), "ingest", *map(str, files), *model, "--library", "paper-"])
    assert r.exit_code == 0, r.output
    assert "library paper-birds v1" in r.output
    assert "library paper-fruit v1" in r.output
    apart = tmp_path / "apart"
    for path in files:
        r = CliRunner().invoke(
            cli, ["--home", str(apart), "ingest", str(path), "--library", "paper-" + path.stem, *model]
        )
        assert r.exit_code == 0, r.output
    a, b = Store.open(together, create=False), Store.open(apart, create=False)
    for name in ("paper-birds", "paper-fruit"):
        x, y = a.load(name), b.load(name)
        assert x.class_names == y.class_names
        assert x.info.encoder_id == y.info.encoder_id
        np.testing.assert_allclose(np.asarray(x.vectors), np.asarray(y.vectors), atol=1e-6)


def test_multi_file_ingest_names_and_refusals(tiny_model, tmp_path):
    from whyclip.store import Store
    from whyclip.ui.cli.main import cli

    (tmp_path / "a").mkdir()
    good = tmp_path / "owls.json"
    good.write_text(json.dumps({"owl": ["big round eyes"]}))
    same = tmp_path / "a" / "owls.json"
    same.write_text(json.dumps({"owl": ["brown feathers"]}))
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    home = tmp_path / "home"
    runner = CliRunner()
    r = runner.invoke(cli, ["--home", str(home), "ingest", str(good), str(same), "--model", str(tiny_model)])
    assert r.exit_code == 2
    assert "would both make library 'owls'" in r.output
    r = runner.invoke(cli, ["--home", str(home), "ingest", str(good), str(bad), "--model", str(tiny_model)])
    assert r.exit_code == 1
    assert "broken.json" in r.output
    assert "Traceback" not in r.output
    assert not (home / "whyclip.db").exists()  # a bad file: nothing written for any of them
    r = runner.invoke(
        cli, ["--home", str(home), "ingest", str(good), "--model", str(tiny_model), "--precision", "fp32"]
    )
    assert r.exit_code == 0
    assert "library owls v1" in r.output
    assert [i.name for i in Store.open(home, create=False).libraries()] == ["owls"]


# -- images decoded in the background ---------------------------------------------------------


def test_images_decoded_ahead_give_the_same_vectors_in_order_and_still_report_bad_files(store, tiny_model, tmp_path):
    from whyclip.ingest import embedding
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.images import read_image

    files = []
    for i in range(70):  # three batches of 32, 32 and 6
        path = tmp_path / f"{i:03d}.png"
        if i == 5:
            path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        elif i == 40:
            path.write_text("not an image")
        else:
            picture(i).save(path)
        files.append(path)
    enc = load_encoder(str(tiny_model), precision="fp32")
    kept, _shas, vectors, skipped, embedded = embedding.embed_image_files_cached(store, enc, files)
    good = [i for i in range(70) if i not in (5, 40)]
    assert kept == good
    assert embedded == 68
    assert len(skipped) == 2
    assert "005.png" in skipped[0]
    assert "040.png" in skipped[1]
    ref, _ = load_encoder(str(tiny_model), precision="fp32").embed_images([read_image(files[i]) for i in good])
    np.testing.assert_allclose(vectors, ref, atol=1e-6)
    again = embedding.embed_image_files_cached(store, enc, files)  # every vector from the cache now
    assert again[0] == good
    assert again[4] == 0
    np.testing.assert_array_equal(again[2], vectors)


def test_prefetched_keeps_order_and_runs_ahead():
    from whyclip.ingest.images import prefetched

    started = []

    def work(x):
        started.append(x)
        return x * 10

    out = []
    for value in prefetched([1, 2, 3, 4], work):
        out.append((value, list(started)))
    assert [v for v, _ in out] == [10, 20, 30, 40]
    assert all(len(seen) >= min(i + 2, 4) - 1 for i, (_, seen) in enumerate(out))
    assert list(prefetched([], work)) == []


# -- threads sharing one encoder (whyclip serve) -----------------------------------------------


def test_two_threads_sharing_an_encoder_settle_each_modality_once(store, tiny_model, monkeypatch):
    from whyclip.ingest import embedding
    from whyclip.ingest.encoder.clip_encoder import ClipEncoder, load_encoder

    low_precision(monkeypatch)
    enc = load_encoder(str(tiny_model))
    real = ClipEncoder._verdict
    entered = threading.Barrier(2, timeout=60)

    def slow_verdict(self, modality, path, floor, compute):
        with contextlib.suppress(threading.BrokenBarrierError):  # both threads inside at once, were there no lock
            entered.wait(timeout=2)
        return real(self, modality, path, floor, compute)

    monkeypatch.setattr(ClipEncoder, "_verdict", slow_verdict)
    images = [picture(i) for i in range(3)]
    results: dict[str, list] = {"text": [], "image": [], "keys": [], "errors": []}

    def texts():
        try:
            for _ in range(4):
                key = embedding.cache_key(enc, "text")
                vecs, _ = enc.embed_texts(PROMPTS)
                results["text"].append(vecs)
                results["keys"].append(("text", key, embedding.cache_key(enc, "text")))
        except Exception as exc:  # pragma: no cover - reported below
            results["errors"].append(repr(exc))

    def pictures():
        try:
            for _ in range(4):
                key = embedding.cache_key(enc, "image")
                vecs, _ = enc.embed_images(images)
                results["image"].append(vecs)
                results["keys"].append(("image", key, embedding.cache_key(enc, "image")))
        except Exception as exc:  # pragma: no cover
            results["errors"].append(repr(exc))

    threads = [threading.Thread(target=texts), threading.Thread(target=pictures), threading.Thread(target=texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results["errors"] == []
    assert enc.checks_run == 2  # text once and images once, however many threads asked
    assert set(enc.checked) == {"text", "image"}
    for modality in ("text", "image"):
        first = results[modality][0]
        for vecs in results[modality][1:]:
            np.testing.assert_array_equal(vecs, first)  # one precision throughout
    settled = {m: embedding.cache_key(enc, m) for m in ("text", "image")}
    for modality, _before, after in results["keys"][2:]:
        assert after == settled[modality]


def test_a_fallback_in_one_modality_leaves_the_other_alone(tiny_model, monkeypatch):
    from whyclip.ingest.encoder import clip_encoder as encoder_module
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    low_precision(monkeypatch)
    enc = load_encoder(str(tiny_model))
    enc.embed_texts(PROMPTS)
    text_key = enc.cache_key
    monkeypatch.setattr(encoder_module, "MIN_COSINE", 1.5)  # images cannot pass
    enc.embed_images([picture(0), picture(1)])
    assert enc.precisions == {"text": "bf16", "image": "fp32"}
    assert enc.cache_key == text_key
    assert "/fp32/image/" in enc.image_cache_key
    assert enc.precision == "text bf16, images fp32"


def test_serve_settles_precision_on_one_shared_encoder(tmp_path, tiny_model):
    """The service builds one encoder that remembers its verdicts in the service's store."""
    from whyclip.ui.api.dependencies import Resources
    from whyclip.ui.api.settings import ServiceSettings

    res = Resources(ServiceSettings(home=str(tmp_path / "home"), model=str(tiny_model), precision="fp32"))
    enc = res.encoder
    assert enc is res.encoder
    assert enc.verdicts is not None
    enc.embed_texts(PROMPTS)
    assert len(enc.verdicts.all()) == 1
