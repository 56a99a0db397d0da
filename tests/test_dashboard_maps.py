"""The Explain page's maps (issue 22): where in the image each descriptor is seen, through
Streamlit's AppTest on the tiny CLIP. The page draws what the core computes: each image it
shows is compared pixel for pixel with the core's maps drawn by ``whyclip.ui.render.maps``,
and the S it prints with an fp32 explanation (maps decompose an fp32 pass)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.fakes import opaque_tower
from whyclip import ingest
from whyclip.ingest import ingest_library
from whyclip.ingest.services.explain import ExplainOptions, open_encoder, plan_explain
from whyclip.ingest.services.maps import MapOptions
from whyclip.ui.render.maps import overlay

APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")
FROGS = {
    "tree frog": ["sticky toe pads", "protruding eyes", "wet and hairless nose", "bright green colour"],
    "tailed frog": ["brown or olive skin", "a short tail-like extension", "protruding eyes"],
    "banana": ["yellow peel", "a long curved shape"],
}


def picture_png() -> bytes:
    """A picture with a place to find: a green square and a dark disc on grey."""
    picture = Image.new("RGB", (96, 80), (128, 128, 128))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((8, 10, 40, 42), fill=(40, 200, 60))
    draw.ellipse((55, 35, 90, 70), fill=(20, 20, 20))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


PNG = picture_png()


@pytest.fixture
def frogs(store, tiny_model, fresh_streamlit_caches):
    ingest_library(store, FROGS, "frogs", ingest.load_encoder(str(tiny_model)))
    return store


@pytest.fixture
def shown(monkeypatch) -> dict[str, bytes]:
    """The bytes of every image the page hands to Streamlit, by media file id (AppTest keeps
    only the images' URLs)."""
    seen: dict[str, bytes] = {}
    load = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = load(self, path_or_data, mimetype, kind, filename)
        if isinstance(path_or_data, bytes):
            seen[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return seen


def run_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader[0].set_value([("frog.png", PNG, "image/png")]).run()
    assert not at.exception
    return at


def oracle(store, model, compare=None, options: MapOptions | None = None):
    """The core's explanation with maps (``ExplainOptions(maps=...)``: the image's vector from
    the decomposition's fp32 pass, as the page takes it), its maps and the picture the model saw."""
    encoder = open_encoder(store, str(model))
    plan = plan_explain(store, "frogs", None, ExplainOptions(compare=compare, maps=options or MapOptions()))
    picture = ingest.images.read_image_bytes("frog.png", PNG)
    (exp,) = plan.with_encoder(encoder).explain_pictures([picture], ["frog.png"])
    tower = encoder.map_model()
    return exp, exp.maps, tower.view(tower.pixels(picture))


def images(at: AppTest, shown: dict[str, bytes]) -> list[tuple[np.ndarray, str]]:
    """Every image the page shows, in order: (pixels, caption)."""
    out = []
    for element in at.image:
        for url, text in zip(element.value, element.captions, strict=True):
            file_id = url.rsplit("/", 1)[-1].split(".")[0]
            out.append((np.asarray(Image.open(io.BytesIO(shown[file_id])).convert("RGB")), text))
    return out


def map_rows(at: AppTest, shown) -> list[list[tuple[np.ndarray, str]]]:
    """The maps shown, a row per descriptor: the picked one's (led by the bare picture), then
    the contrast's class a's and class b's; each row starts with the picture or the exact map."""
    rows: list[list[tuple[np.ndarray, str]]] = []
    for pixels, text in images(at, shown):
        if text.startswith("the picture") or (text.startswith("exact") and not rows[-1][-1][1].startswith("the")):
            rows.append([])
        if text.startswith(("the picture", "exact", "dense", "occlusion")):
            rows[-1].append((pixels, text))
    return rows


def drawn(view: np.ndarray, grid) -> np.ndarray:
    """The oracle's map as the page should show it: drawn over the view, each cell a block."""
    img = overlay(view, grid)
    k = -(-224 // min(view.shape[:2]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def line_of(at: AppTest, descriptor: str) -> str:
    return next(m.value for m in at.markdown if m.value.startswith(f"**{descriptor}**"))


def numbers(line: str) -> dict[str, float]:
    """S, patches and remainder from a map's line."""
    found = re.search(r"S (-?[\d.]+), patches ([+-][\d.]+), remainder ([+-][\d.]+)", line)
    assert found, line
    return dict(zip(("S", "patches", "remainder"), map(float, found.groups()), strict=True))


def test_the_predicted_classs_best_descriptor_is_mapped_without_a_click(frogs, tiny_model, shown):
    at = run_page()
    exp, maps, view = oracle(frogs, tiny_model)
    best = exp.classes[0].descriptors[0]
    assert "Where in the image: each descriptor's map" in [h.value for h in at.subheader]
    assert any("Red raises the descriptor's S, blue lowers it" in c.value for c in at.caption)
    assert any("random-weight test model" in w.value and "so do its maps" in w.value for w in at.warning)
    box = at.selectbox(key=next(b.key for b in at.selectbox if b.label == "Descriptor to map"))
    assert box.value.startswith(f"{exp.predicted}: {best.descriptor} (S ")
    (row, *_) = map_rows(at, shown)
    (mapped,) = [m for m in maps.maps if m.class_name == exp.predicted and m.descriptor == best.descriptor]
    assert mapped.patches is not None
    np.testing.assert_array_equal(row[1][0], drawn(view, mapped.patches))
    np.testing.assert_array_equal(row[0][0], drawn(view, np.zeros((1, 1))))  # the picture alone
    assert np.abs(row[1][0].astype(int) - row[0][0].astype(int)).max() > 20  # a map, not the bare picture
    shown_numbers = numbers(line_of(at, best.descriptor))
    # the page explains with the decomposition's vector: the S it lists is the S the map splits
    listed = at.dataframe[1].value  # the predicted class's descriptors
    assert list(listed["descriptor"]) == [d.descriptor for d in exp.classes[0].descriptors]
    assert list(listed["S"]) == pytest.approx([d.scaled for d in exp.classes[0].descriptors], abs=1e-9)
    assert f"{shown_numbers['S']:.2f}" == f"{listed['S'][0]:.2f}" == f"{mapped.score:.2f}"
    # and it is the explanation's S in fp32, encoded the usual way (the independent check)
    fp32 = ingest.load_encoder(str(tiny_model), precision="fp32")
    (plain,) = frogs.load("frogs").explain(fp32.embed_images([ingest.images.read_image_bytes("f", PNG)])[0])
    assert plain.predicted == exp.predicted
    (plain_best,) = [d for d in plain.classes[0].descriptors if d.descriptor == best.descriptor]
    assert shown_numbers["S"] == pytest.approx(plain_best.scaled, abs=0.0051)
    assert shown_numbers["patches"] + shown_numbers["remainder"] == pytest.approx(shown_numbers["S"], abs=0.011)
    assert shown_numbers["remainder"] == pytest.approx(round(mapped.remainder, 2))
    assert any("fp32, decomposed for the maps" in c.value for c in at.caption)


def test_another_descriptor_picked_shows_its_map(frogs, tiny_model, shown):
    at = run_page()
    _, maps, view = oracle(frogs, tiny_model)
    first = map_rows(at, shown)[0][1][0]
    box = next(b for b in at.selectbox if b.label == "Descriptor to map")
    assert len(box.options) == len(maps.maps)
    other = next(m for m in maps.maps if m.class_name == "banana" and m.descriptor == "yellow peel")
    box.set_value(next(o for o in box.options if o.startswith("banana: yellow peel (S "))).run()
    assert not at.exception
    after = map_rows(at, shown)[0][1][0]
    np.testing.assert_array_equal(after, drawn(view, other.patches))
    assert not np.array_equal(after, first)
    assert numbers(line_of(at, "yellow peel"))["S"] == pytest.approx(round(other.score, 2))


def test_the_contrasts_two_classes_are_mapped_side_by_side(frogs, tiny_model, shown):
    at = run_page()
    pick = {box.label: box for box in at.selectbox}
    pick["Contrast class A"].set_value("tailed frog")
    pick["with class B"].set_value("banana").run()
    assert not at.exception
    exp, maps, view = oracle(frogs, tiny_model, compare=("tailed frog", "banana"))
    assert any("Where each class's evidence lies" in m.value for m in at.markdown)
    boxes = {b.label: b for b in at.selectbox}
    rows = map_rows(at, shown)
    assert len(rows) == 3  # the picked descriptor, then class a and class b
    for name, row in zip(("tailed frog", "banana"), rows[1:], strict=True):
        best = maps.of_class(name)[0]
        assert best.descriptor == next(c for c in exp.classes if c.name == name).descriptors[0].descriptor
        assert boxes[f"Descriptor of {name}"].value.startswith(f"{best.descriptor} (S {best.score:.2f}")
        np.testing.assert_array_equal(row[0][0], drawn(view, best.patches))
        assert line_of(at, best.descriptor)  # its line: S, patches and remainder
    # another descriptor of class b
    box = boxes["Descriptor of banana"]
    box.set_value(box.options[1]).run()
    second = maps.of_class("banana")[1]
    np.testing.assert_array_equal(map_rows(at, shown)[2][0][0], drawn(view, second.patches))


def test_occlusion_and_dense_maps_on_request(frogs, tiny_model, shown):
    at = run_page()
    assert [len(r) for r in map_rows(at, shown)] == [2, 1, 1]  # the picture and the exact map; class a's, b's
    boxes = {c.label: c for c in at.checkbox}
    boxes["occlusion check (slower: up to 49 encodes)"].check()
    boxes["dense map (ClearCLIP): sharper, but it does not add up to S"].check().run()
    assert not at.exception
    _, maps, view = oracle(frogs, tiny_model, options=MapOptions(check="occlusion", dense=True))
    best = maps.maps[0]
    row = map_rows(at, shown)[0]
    assert [c.split(" (full colour")[0] for _, c in row[1:]] == [
        f"exact, last {maps.layers} layers: share of S per patch",
        "dense (ClearCLIP): does not add up to S",
        f"occlusion {maps.occlusion_grid}x{maps.occlusion_grid}: fall in S when masked",
    ]
    np.testing.assert_array_equal(row[2][0], drawn(view, best.dense))
    np.testing.assert_array_equal(row[3][0], drawn(view, best.occlusion))
    assert [len(r) for r in map_rows(at, shown)] == [4, 3, 3]
    line = line_of(at, best.descriptor)
    assert f"agreement with occlusion {best.agreement:+.2f}" in line


def test_an_encoder_without_an_image_tower_says_there_are_no_maps(store, monkeypatch, fresh_streamlit_caches):
    from tests.helpers.fakes import install_fake, planted_png

    fake = install_fake(monkeypatch, ["protruding eyes"])
    ingest_library(store, FROGS, "frogs", fake)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.file_uploader[0].set_value([("frog.png", planted_png(["protruding eyes"]), "image/png")]).run()
    assert not at.exception
    assert any(i.value.startswith("No maps: maps need a CLIP image tower") for i in at.info)
    assert not any(b.label == "Descriptor to map" for b in at.selectbox)
    assert "Best-matching descriptors in the whole library" in [h.value for h in at.subheader]


def test_a_tower_without_reachable_insides_is_mapped_by_occlusion_when_asked(frogs, tiny_model, shown, monkeypatch):
    from whyclip.ingest.encoder.clip_encoder import ClipEncoder
    from whyclip.ingest.encoder.decompose import MapModel

    real = ClipEncoder.map_model
    opaque: dict[int, MapModel] = {}

    def map_model(self):
        if id(self) not in opaque:
            inner = real(self)
            opaque[id(self)] = MapModel(opaque_tower(inner.tower), inner.processor)
        return opaque[id(self)]

    monkeypatch.setattr(ClipEncoder, "map_model", map_model)
    at = run_page()
    note = next(i.value for i in at.info if "insides are not reachable" in i.value)
    assert "Tick the occlusion check" in note
    assert not any(b.label == "Descriptor to map" for b in at.selectbox)  # 49 encodes only when asked for
    assert not any("decomposed for the maps" in c.value for c in at.caption)  # the usual encode
    next(c for c in at.checkbox if c.label.startswith("occlusion check")).check().run()
    assert not at.exception
    _, maps, view = oracle(frogs, tiny_model, options=MapOptions(check="occlusion"))
    assert maps.method == "occlusion"
    assert maps.note in [i.value for i in at.info]
    best = maps.maps[0]
    flat = images(at, shown)
    captions = [c for _, c in flat]
    assert captions[1:3] == [
        "the picture the model saw (32x32)",
        f"occlusion 7x7: fall in S when masked (full colour: {np.abs(np.asarray(best.occlusion)).max():.2g})",
    ]
    np.testing.assert_array_equal(flat[2][0], drawn(view, best.occlusion))
    assert what_follows(line_of(at, best.descriptor)) == f"S {best.score:.2f}"


def what_follows(line: str) -> str:
    """A map's line after its descriptor and class: only S when there is no exact map."""
    return line.split(": ", 1)[1]


def test_the_download_carries_the_maps_shown(frogs, tiny_model, shown):
    """The JSON download is ``whyclip explain --json`` with maps: the explanation and the
    maps of the boxes ticked."""
    import json

    at = run_page()
    next(c for c in at.checkbox if c.label.startswith("dense map")).check().run()
    exp, maps, _ = oracle(frogs, tiny_model, options=MapOptions(dense=True))
    button = at.get("download_button")[0]
    assert button.proto.label == "Download this explanation (JSON), with its maps"
    data = json.loads(shown[button.proto.url.rsplit("/", 1)[-1].split(".")[0]])
    assert data["maps"] == json.loads(json.dumps(maps.to_dict()))  # the same pass: the same numbers
    assert data["classes"] == json.loads(json.dumps(exp.to_dict()))["classes"]
