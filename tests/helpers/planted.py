"""The planted eval world: a fake encoder whose vectors are known concepts,
so accuracies, drivers, confusions and hygiene findings are known before the run.

The library (bare template, so a prompt is its descriptor text) and what each image shows
(``name*2`` = twice as strongly):

  tree frog: green skin, big eyes, webbed feet        F1, F2: frog, green*2, eyes
  banana:    yellow peel, curved shape, smooth surface B1, B2: banana, curved*2, yellow;  B3: banana, eyes*2
  stop sign: red colour, octagon shape, smooth surface, curved edge     S1, S2: stop, red*2, octagon
  sunflower: dark seeds, round head                    U1, U2: sunflower, yellow*2

Baseline prompts ("a photo of a tree frog.") carry the class concept, which every image of
its class shows, so the baseline gets all 9 right. Under the mean aggregate B3 goes to tree
frog ("big eyes") and both sunflowers to banana ("yellow peel"): 6/9. "webbed feet",
"smooth surface", "dark seeds" and "round head" match no concept any image shows (flat);
"curved shape" and "curved edge" are the same concept in two classes (near-identical);
"smooth surface" is in two classes (shared).
"""

from __future__ import annotations

import pytest

from tests.helpers.fakes import FakeEncoder, planted_png
from whyclip.ingest import ingest_library
from whyclip.store import Store

CONCEPTS = ["frog", "banana", "stop", "sunflower", "green", "eyes", "yellow", "curved", "red", "octagon"]
LIBRARY = {
    "tree frog": ["green skin", "big eyes", "webbed feet"],
    "banana": ["yellow peel", "curved shape", "smooth surface"],
    "stop sign": ["red colour", "octagon shape", "smooth surface", "curved edge"],
    "sunflower": ["dark seeds", "round head"],
}
IMAGES = {  # folder -> [(file, concepts)]
    "tree frog": [("f1.png", "frog|green*2|eyes"), ("f2.png", "frog|green*2|eyes")],
    "banana": [("b1.png", "banana|curved*2|yellow"), ("b2.png", "banana|curved*2|yellow"), ("b3.png", "banana|eyes*2")],
    "stop sign": [("s1.png", "stop|red*2|octagon"), ("s2.png", "stop|red*2|octagon")],
    "sunflower": [("u1.png", "sunflower|yellow*2"), ("u2.png", "sunflower|yellow*2")],
}


def write_dataset(root, images=IMAGES, rename=None):
    for k, (folder, files) in enumerate(images.items()):
        d = root / (rename or {}).get(folder, folder)
        d.mkdir(parents=True, exist_ok=True)
        for j, (name, concepts) in enumerate(files):
            (d / name).write_bytes(planted_png(concepts.split("|"), colour=(10 * k, 20 * j, 99)))
    return root


@pytest.fixture
def world(tmp_path):
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(CONCEPTS, noise=0.01)
    ingest_library(store, LIBRARY, "planted", enc, template="bare")
    return store, enc, store.load("planted"), write_dataset(tmp_path / "data")
