"""A full-size CLIP, when one is on this machine: whyclip's own text and image paths against
sentence-transformers' encoding of the same folder (the independent reference), and the
demo library ingested and explained with it. Slow tier; skipped unless
``WHYCLIP_FULL_MODEL`` names a local model folder (for example a saved
``sentence-transformers/clip-ViT-B-32``): no weights can be downloaded in CI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.cli import invoke

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_model() -> Path:
    folder = os.environ.get("WHYCLIP_FULL_MODEL")
    if not folder or not Path(folder).is_dir():
        pytest.skip("set WHYCLIP_FULL_MODEL to a local full-size CLIP folder to run the full-model tests")
    return Path(folder)


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((224, 224), (480, 320), (97, 640))
    ]


def test_text_and_image_vectors_are_sentence_transformers(full_model):
    from sentence_transformers import SentenceTransformer

    from whyclip.ingest.encoder.clip_encoder import load_encoder

    texts = ["a photo of a tree frog.", "tree frog, which has protruding eyes", "a stop sign, which has red octagon"]
    ours = load_encoder(str(full_model), precision="fp32")
    ref = SentenceTransformer(str(full_model), device="cpu")
    vectors, norms = ours.embed_texts(texts)
    np.testing.assert_allclose(vectors * norms[:, None], ref.encode(texts), rtol=1e-4, atol=1e-5)
    images = pictures()
    vectors, norms = ours.embed_images(images)
    np.testing.assert_allclose(vectors * norms[:, None], ref.encode(images), rtol=1e-4, atol=1e-5)


def test_the_demo_library_ingests_and_explains(full_model, tmp_path):
    home = tmp_path / "home"
    library = ROOT / "ui" / "demo" / "library.json"
    done = invoke("ingest", library, "--library", "demo", "--model", full_model, home=home)
    assert done.returncode == 0, done.stderr
    image = tmp_path / "green.png"
    Image.new("RGB", (320, 240), (40, 170, 60)).save(image)
    done = invoke("explain", image, "--library", "demo", "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    n_classes = len(json.loads(library.read_text(encoding="utf-8")))
    assert len(out["classes"]) == min(5, n_classes)
    for c in out["classes"]:  # the exact score: each class's mean descriptor similarity
        assert c["score"] == pytest.approx(np.mean([d["similarity"] for d in c["descriptors"]]), abs=1e-5)
