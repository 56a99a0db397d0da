"""Eval's stages are timed apart, the model's loading its own stage (issue 21, item 17):
a model whose towers load on first use made the random-word control seem to take 14.5 s
of 15.3 s, and a cached rerun 0.0 s. On a fake clock that only the fake encoder moves, so
every second is known: what loading took, and what each stage's own work took."""

from __future__ import annotations

import json
import types

import pytest

from tests.helpers.cli import invoke
from tests.helpers.fakes import FakeEncoder
from tests.helpers.planted import CONCEPTS
from whyclip import ingest
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services import evaluate
from whyclip.ingest.services.evaluate import run_eval
from whyclip.ui.cli import evaluate as eval_cli

TEXT_TOWER, IMAGE_TOWER = 7.0, 3.0  # seconds each tower takes to load, on first use
TEXT_CALL, IMAGE_CALL = 0.5, 0.25  # seconds each embedding call takes once loaded


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class LazyEncoder(FakeEncoder):
    """The fake encoder with towers that load on first use, as a CLIP folder's do: each
    load and each call moves the clock by a known amount, and loading is reported in
    ``load_seconds`` as the real encoder reports it."""

    def __init__(self, clock: Clock, constructed: float = 0.0):
        super().__init__(CONCEPTS, noise=0.01)
        self.clock = clock
        self.load_seconds = constructed
        self.towers: set[str] = set()
        self.work = {"text": 0.0, "image": 0.0}  # seconds of embedding, loading aside

    def _use(self, tower: str, load: float, call: float) -> None:
        if tower not in self.towers:
            self.towers.add(tower)
            self.clock.now += load
            self.load_seconds += load
        self.clock.now += call
        self.work[tower] += call

    def embed_texts(self, texts, progress=None):
        self._use("text", TEXT_TOWER, TEXT_CALL)
        return super().embed_texts(texts, progress)

    def embed_images(self, images, progress=None):
        self._use("image", IMAGE_TOWER, IMAGE_CALL)
        return super().embed_images(images, progress)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    fake_time = types.SimpleNamespace(perf_counter=clock)
    monkeypatch.setattr(evaluate, "time", fake_time)
    monkeypatch.setattr(eval_cli, "time", fake_time)
    return clock


def test_loading_is_its_own_stage_and_no_other_stage_carries_it(world, clock):
    store, _, lib, data = world
    enc = LazyEncoder(clock)
    report = run_eval(store, lib, read_dataset(data), enc, name="r1", loaded_in=2.0)
    t = report.timings
    assert t["model_load"] == 2.0 + TEXT_TOWER + IMAGE_TOWER
    assert enc.work["text"] > 0
    assert enc.work["image"] > 0
    assert t["control"] == enc.work["text"]  # the control embeds every text, and carries none of the loading
    assert t["images"] == enc.work["image"]
    assert t["scoring"] == t["recalibrate"] == t["plan"] == 0.0
    assert report.seconds == pytest.approx(sum(t.values()))
    assert report.seconds == pytest.approx(2.0 + TEXT_TOWER + IMAGE_TOWER + enc.work["text"] + enc.work["image"])

    # a rerun on the same encoder: everything is cached and loaded, nothing is counted twice
    again = run_eval(store, lib, read_dataset(data), enc, name="r2")
    assert again.n_cached == 9
    assert again.timings["model_load"] == 0.0
    assert again.seconds == sum(again.timings.values())


def test_eval_prints_the_model_load_apart(world, clock, monkeypatch):
    store, _, _, data = world
    loading = 5.0

    def load_encoder(*args, **kwargs):  # the constructor's share: weights read before any tower is used
        clock.now += loading
        return LazyEncoder(clock, constructed=loading)

    monkeypatch.setattr(ingest, "load_encoder", load_encoder)
    done = invoke("eval", data, "-l", "planted", "--json", home=store.home)
    assert done.returncode == 0, done.stderr
    t = json.loads(done.stdout)["timings"]
    assert t["model_load"] == loading + TEXT_TOWER + IMAGE_TOWER
    assert t["control"] < TEXT_TOWER  # the text tower's load is not the control's
    text = invoke("eval", data, "-l", "planted", home=store.home)
    assert text.returncode == 0, text.stderr
    first, stages = text.stdout.splitlines()[:2]
    # the rerun loads a new encoder (5 s), but every vector is cached: neither tower loads, nothing is embedded
    assert first.endswith(f"in {loading:.1f}s")
    assert stages.startswith(f"  model load {loading:.1f}s, images 0.0s")
    assert "control libraries 0.0s, scoring 0.0s, retrieval tuning 0.0s" in stages


def test_the_clip_encoder_counts_a_tower_loaded_on_first_use_as_loading(tiny_model, monkeypatch):
    """The real encoder's side of the contract: ``load_seconds`` grows by what loading a
    tower on first use took, and by nothing else (a fake clock that only the load moves)."""
    from PIL import Image

    from whyclip.ingest.encoder import clip_encoder, vision
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="fp32")
    assert enc._st.plain_vision_reason is None  # the image tower loads through vision.load_vision_tower
    assert enc.loaded_towers == set()
    clock = Clock()
    monkeypatch.setattr(clip_encoder, "time", types.SimpleNamespace(perf_counter=clock))
    real = vision.load_vision_tower

    def slow_load(folder):
        clock.now += IMAGE_TOWER
        return real(folder)

    monkeypatch.setattr(vision, "load_vision_tower", slow_load)
    before = enc.load_seconds
    enc.embed_images([Image.new("RGB", (40, 30), (200, 30, 30))])
    assert enc.loaded_towers == {"image"}
    assert enc.load_seconds - before == IMAGE_TOWER
    enc.embed_images([Image.new("RGB", (40, 30), (30, 30, 200))])  # loaded: nothing more
    assert enc.load_seconds - before == IMAGE_TOWER
