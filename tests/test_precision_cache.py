"""The cache key is settled by the precision check before a looked-up vector is used: an
encoder that starts in bf16 and falls back to fp32 reads and writes only fp32 rows, in the
ingest, for eval images and for the control prompts (which embed through the cache)."""

from __future__ import annotations

import numpy as np

from tests.helpers.fakes import FakeEncoder, planted_png
from whyclip.ingest import ingest_library, read_image
from whyclip.ingest.embedding import embed_image_files_cached, embed_prompts
from whyclip.ingest.images import PIXEL_RULES
from whyclip.store.db import embedding_cache


class FallingBack(FakeEncoder):
    """Starts in bf16 and falls back to fp32 at its first precision check; its bf16
    vectors are the negated fp32 ones, so a vector tells which precision made it."""

    def __init__(self, fails: bool = True):
        super().__init__(["green"])
        self.precision, self.fails, self.checks = "bf16", fails, []

    @property
    def cache_key(self) -> str:
        return f"{self.info.id}/{self.precision}"

    @cache_key.setter
    def cache_key(self, _value) -> None:  # FakeEncoder.__init__ sets one
        pass

    def check_precision(self, modality, sample) -> None:
        self.checks.append(modality)
        if self.fails:
            self.precision = "fp32"

    def _signed(self, out):
        vectors, norms = out
        return (vectors if self.precision == "fp32" else -vectors), norms

    def embed_texts(self, texts, progress=None):
        return self._signed(super().embed_texts(texts, progress))

    def embed_images(self, images, progress=None):
        return self._signed(super().embed_images(images, progress))


PROMPTS = ["a green frog", "an owl", "a mole"]


def test_prompts_found_under_fp32_after_the_fallback_are_used_and_nothing_is_embedded(store):
    reference = FakeEncoder(["green"])
    vectors, norms = reference.embed_texts(PROMPTS)
    embedding_cache.save(store.engine, "fake-32-v1/fp32", PROMPTS, vectors, norms)  # an earlier run that fell back
    enc = FallingBack()
    got, _ = embed_prompts(store, enc, PROMPTS)
    assert enc.embedded == []
    assert enc.checks == ["text"]
    np.testing.assert_array_equal(got, vectors)
    assert embedding_cache.count(store.engine, "fake-32-v1/bf16") == 0


def test_an_ingest_that_falls_back_caches_fp32_vectors_under_the_fp32_key(store):
    enc = FallingBack()
    report = ingest_library(store, {"frog": ["green skin"], "owl": ["wings"]}, "animals", enc)
    assert report.n_embedded == 4
    assert enc.precision == "fp32"
    assert (
        embedding_cache.count(store.engine, "fake-32-v1/fp32"),
        embedding_cache.count(store.engine, "fake-32-v1/bf16"),
    ) == (4, 0)
    again = ingest_library(store, {"frog": ["green skin"], "owl": ["wings"]}, "animals", FallingBack())
    assert (again.n_embedded, again.n_reused) == (0, 4)
    np.testing.assert_array_equal(store.load("animals", 1).vectors, store.load("animals", 2).vectors)
    assert (
        store.load("animals").vectors[0] == FakeEncoder(["green"]).embed_texts(["frog, which has green skin"])[0][0]
    ).all()


def test_images_cached_in_bf16_are_not_mixed_with_fp32_after_a_later_fallback(store, tmp_path):
    files = []
    for i in range(40):  # two batches of 32 and 8
        path = tmp_path / f"{i}.png"
        path.write_bytes(planted_png(["green"], colour=(i, 100, 200)))
        files.append(path)
    first = FallingBack(fails=False)  # a bf16 run whose check passed cached the first batch
    embed_image_files_cached(store, first, files[:32])
    assert embedding_cache.count(store.engine, f"fake-32-v1/bf16/image/{PIXEL_RULES}") == 32
    enc = FallingBack()  # this run's check fails at the second batch, the first one being cached in bf16
    kept, _, vectors, skipped, embedded = embed_image_files_cached(store, enc, files)
    assert (kept, skipped, embedded) == (list(range(40)), [], 40)
    reference = FakeEncoder(["green"]).embed_images([read_image(p) for p in files])[0]
    np.testing.assert_array_equal(vectors, reference)  # every vector fp32 (a bf16 one is negated)
    assert embedding_cache.count(store.engine, f"fake-32-v1/fp32/image/{PIXEL_RULES}") == 40
