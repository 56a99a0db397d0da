"""Maps of an explanation (issue 22) through the core every surface calls
(ingest/services/maps.py via Explainer.maps), the command line's ``--maps DIR`` and the
drawing (ui/render/maps.py), on the tiny model in fp32.

The oracle for a map is computed apart from the service: the tower's decomposition
(tests/test_decompose.py checks it against transformers) applied to the descriptor's prompt
embedded afresh, so a map paired with the wrong descriptor's vector, or a remainder dropped,
shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import invoke
from tests.helpers.fakes import opaque_tower

LIBRARY = {
    "tree frog": ["bright green skin", "big round eyes", "sticky toe pads"],
    "banana": ["yellow curved peel", "brown spots"],
    "stop sign": ["red octagon", "white letters", "metal pole"],
    "sunflower": ["yellow petals", "dark seed head"],
    "pebble": [],  # no descriptors: its baseline prompt is mapped
}


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    im.paste((220, 30, 30), (5, 5, 30, 30))
    return im


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    import whyclip

    root = tmp_path_factory.mktemp("maps")
    (root / "lib.json").write_text(json.dumps(LIBRARY))
    wc = whyclip.open(root / "home", precision="fp32")
    wc.ingest(root / "lib.json", library="lib", model=str(tiny_model))
    for i in range(2):
        _picture(i).save(root / f"img{i}.png")
    yield wc, root
    wc.close()


def _oracle(tiny_model, picture, prompts, scale):
    """Maps and remainders from the tower alone, with each prompt embedded afresh."""
    from whyclip.ingest import load_encoder
    from whyclip.ingest.encoder.decompose import decompose
    from whyclip.ingest.encoder.vision import image_processor, load_vision_tower

    encoder = load_encoder(str(tiny_model), precision="fp32")
    texts, _ = encoder.embed_texts(prompts)
    dec = decompose(load_vision_tower(tiny_model), image_processor(tiny_model)(picture)["pixel_values"])
    return dec.scores(texts.astype(np.float64), scale)


def test_every_listed_descriptor_gets_its_exact_map(world, tiny_model):
    import whyclip

    wc, _root = world
    (e,) = wc.explain([_picture(0)], library="lib", top=3, maps=whyclip.MapOptions(check="occlusion", dense=True))
    m = e.maps
    assert m is not None
    assert m.method == "decomposition"
    assert m.note is None
    assert m.grid == (4, 4)
    assert m.size == (32, 32)
    assert m.occlusion_grid == 4
    assert m.dense
    # the shown classes' listed descriptors in their order, then the contrast's classes not shown
    expected = [(c.name, d.descriptor, d.prompt) for c in e.classes for d in c.descriptors]
    assert [(x.class_name, x.descriptor, x.prompt) for x in m.maps[: len(expected)]] == expected
    shown = {c.name for c in e.classes}
    assert e.contrast is not None
    assert {e.contrast.a, e.contrast.b} <= shown
    assert len(m.maps) == len(expected)
    # against the oracle: patches, remainder, and S equal to the explanation's own (both fp32)
    patches, rest = _oracle(tiny_model, _picture(0), [x.prompt for x in m.maps], e.logit_scale)
    listed = {(c.name, d.prompt): d.scaled for c in e.classes for d in c.descriptors}
    for i, x in enumerate(m.maps):
        np.testing.assert_allclose(np.array(x.patches), patches[i], atol=1e-5)
        assert x.remainder == pytest.approx(rest[i], abs=1e-5)
        assert np.sum(x.patches) + x.remainder == pytest.approx(x.score, abs=1e-9)  # adds up, exactly
        assert x.score == pytest.approx(listed[(x.class_name, x.prompt)], abs=1e-4)
        assert np.array(x.dense).shape == (4, 4)
        assert np.array(x.occlusion).shape == (4, 4)
        assert x.agreement is None or -1.0 <= x.agreement <= 1.0
    assert sum(x.agreement is not None for x in m.maps) >= len(m.maps) - 1


def test_a_compared_class_outside_the_shown_ones_gets_maps_too(world, tiny_model):
    wc, _root = world
    (e,) = wc.explain([_picture(1)], library="lib", top=1, compare=("banana", "pebble"), maps=True)
    m = e.maps
    names = [x.class_name for x in m.maps]
    assert names[: len(e.classes[0].descriptors)] == [e.classes[0].name] * len(e.classes[0].descriptors)
    # banana's two descriptors, best first, and pebble's baseline prompt (it has no descriptors)
    banana = [x for x in m.maps if x.class_name == "banana"]
    if e.classes[0].name != "banana":
        assert len(banana) == 2
        assert banana[0].score >= banana[1].score
    (pebble,) = [x for x in m.maps if x.class_name == "pebble"]
    assert pebble.descriptor == ""
    assert pebble.prompt == "a photo of a pebble."
    patches, _rest = _oracle(tiny_model, _picture(1), [pebble.prompt], e.logit_scale)
    np.testing.assert_allclose(np.array(pebble.patches), patches[0], atol=1e-5)
    assert e.maps.dense is False
    assert pebble.dense is None
    assert pebble.occlusion is None
    assert pebble.agreement is None


def test_maps_survive_the_json_round_trip(world):
    from whyclip.store import Explanation

    wc, _ = world
    (e,) = wc.explain([_picture(0)], library="lib", maps=True)
    d = json.loads(json.dumps(e.to_dict()))
    assert Explanation.from_dict(d).maps == e.maps
    assert "maps" not in wc.explain([_picture(0)], library="lib")[0].to_dict()  # only when asked for


def test_a_tower_that_cannot_be_decomposed_gets_occlusion_only(world, tiny_model, monkeypatch):
    from whyclip.ingest.encoder.decompose import MapModel, occlusion

    wc, _ = world
    encoder = wc.encoder(str(tiny_model))
    real = encoder.map_model()
    opaque = MapModel(opaque_tower(real.tower), real.processor)
    assert opaque.reason is not None
    assert "not a ViT CLIP vision model" in opaque.reason
    monkeypatch.setattr(encoder, "map_model", lambda: opaque)
    (e,) = wc.explain([_picture(0)], library="lib", top=2, maps=True)
    m = e.maps
    assert m.method == "occlusion"
    assert m.grid is None
    assert m.layers is None
    assert m.note == f"maps by occlusion only: this model's insides are not reachable ({opaque.reason})"
    pixels = real.pixels(_picture(0))
    prompts = [x.prompt for x in m.maps]
    texts, _ = encoder.embed_texts(prompts)
    assert m.occlusion_grid == 7  # the tower does not say its patch grid: the default grid
    drops = occlusion(real.tower, pixels, texts, e.logit_scale, grid=7)
    listed = {(c.name, d.prompt): d.scaled for c in e.classes for d in c.descriptors}
    for i, x in enumerate(m.maps):
        assert x.patches is None
        assert x.remainder is None
        assert x.agreement is None
        np.testing.assert_allclose(np.array(x.occlusion), drops[i], atol=1e-5)
        assert x.score == pytest.approx(listed[(x.class_name, x.prompt)], abs=1e-4)


def test_maps_need_pixels_and_a_clip_tower(world, monkeypatch):
    from whyclip.store import InputError

    wc, _ = world
    with pytest.raises(InputError, match="maps need the images"):
        wc.explain(np.ones((1, wc.library("lib").dim), np.float32), library="lib", maps=True)
    import whyclip

    with pytest.raises(InputError, match="unknown map check 'saliency'"):
        wc.explain([_picture(0)], library="lib", maps=whyclip.MapOptions(check="saliency"))


def test_too_many_maps_are_refused_before_any_work(world):
    import dataclasses

    wc, _ = world
    wc.limits = dataclasses.replace(wc.limits, max_maps=5)
    try:
        from whyclip.store import InputError

        with pytest.raises(InputError, match=r"maps for up to \d+ descriptors per image is over the limit of 5"):
            wc.explain([_picture(0)], library="lib", maps=True)
        wc.explain([_picture(0)], library="lib", maps=False)  # the bound is on maps only
    finally:
        wc.limits = dataclasses.replace(wc.limits, max_maps=256)


# -- the command line ---------------------------------------------------------------------


def test_explain_maps_writes_a_png_per_map_and_one_page(world, tiny_model, tmp_path):
    _wc, root = world
    home = root / "home"
    out = tmp_path / "out"
    args = ["explain", root / "img0.png", root / "img1.png", "--library", "lib", "--precision", "fp32"]
    r = invoke(*args, "--maps", out, "--check", "occlusion", "--json", home=home)
    assert r.returncode == 0, r.output
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert f"maps of 2 image(s) in {out / 'index.html'}" in r.stderr
    page = (out / "index.html").read_text()
    for answer, name in zip(answers, ["img0", "img1"], strict=True):
        folder = out / name
        saved = json.loads((folder / "maps.json").read_text())
        assert saved == {"image": answer["image"], **answer["maps"]}
        pngs = sorted(folder.glob("[0-9][0-9][0-9]-*.png"))
        assert len(pngs) == len(answer["maps"]["maps"]) > 0
        with Image.open(folder / "view.png") as view:
            assert view.size == (32, 32)
        for png in pngs:
            with Image.open(png) as im:
                assert im.format == "PNG"
                assert im.size == (660, 350)
            assert f'src="{name}/{png.name}"' in page
        for m in answer["maps"]["maps"]:
            assert f"{m['score']:.2f}" in page
    assert page.count("<h2") == 2
    assert "random-weight test model" in page


def test_maps_go_with_a_folder_of_their_own(world, tmp_path):
    _wc, root = world
    home = root / "home"
    base = ["explain", root / "img0.png", "--library", "lib", "--precision", "fp32"]
    r = invoke(*base, "--check", "occlusion", home=home)
    assert r.returncode == 2
    assert "--check goes with --maps DIR: add --maps DIR" in r.stderr
    r = invoke(*base, "--dense", home=home)
    assert r.returncode == 2
    assert "--dense goes with --maps DIR" in r.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = invoke(*base, "--maps", mine, home=home)
    assert r.returncode == 1
    assert "the folder holds other files; give a new or empty folder" in r.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # nothing written
    out = tmp_path / "out"
    assert invoke(*base, "--maps", out, home=home).returncode == 0
    first = sorted(p.name for p in (out / "img0").iterdir())
    r = invoke(*base, "--maps", out, "--dense", home=home)  # a folder --maps wrote may be written again
    assert r.returncode == 0, r.output
    assert sorted(p.name for p in (out / "img0").iterdir()) == first
    with Image.open(next((out / "img0").glob("000-*.png"))) as im:
        assert im.size == (660, 350)  # now exact and dense
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_fake_encoder_has_no_tower_to_map(tmp_path, monkeypatch):
    from tests.helpers.fakes import FROG_CONCEPTS, FROG_LIBRARY, install_fake

    install_fake(monkeypatch, FROG_CONCEPTS)
    (tmp_path / "lib.json").write_text(json.dumps(FROG_LIBRARY))
    assert invoke("ingest", tmp_path / "lib.json", "--library", "p", home=tmp_path / "h").returncode == 0
    _picture(0).save(tmp_path / "a.png")
    r = invoke("explain", tmp_path / "a.png", "--library", "p", "--maps", tmp_path / "out", home=tmp_path / "h")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("Error: maps need a CLIP image tower")
    assert not (tmp_path / "out").exists()


# -- the drawing ----------------------------------------------------------------------------


def test_the_overlay_draws_each_cell_on_its_pixels_by_sign_and_size():
    import matplotlib

    from whyclip.ui.render.maps import CMAP, MAX_ALPHA, overlay

    view = np.full((32, 48, 3), 128, np.uint8)
    view[:, :, 1] = 40
    grid = [[2.0, 0.0, -1.0], [0.0, -2.0, 0.5]]
    out = overlay(view, grid)
    assert out.shape == view.shape
    assert out.dtype == np.uint8
    cmap = matplotlib.colormaps[CMAP]
    for (r, c), v in np.ndenumerate(np.array(grid)):
        block = out[16 * r : 16 * r + 16, 16 * c : 16 * c + 16].reshape(-1, 3)
        assert (block == block[0]).all()  # one colour per cell: drawn cell by cell, not smoothed
        a = MAX_ALPHA * abs(v) / 2.0
        colour = np.array(cmap(0.5 + v / 4.0)[:3])
        want = np.round(255 * ((1 - a) * view[0, 0] / 255 + a * colour))
        np.testing.assert_array_equal(block[0], want)
    red, blue = out[0, 0], out[16, 16]  # the largest positive and negative cells
    assert red[0] > red[2] + 50
    assert blue[2] > blue[0] + 50
    np.testing.assert_array_equal(out[0, 16], view[0, 0])  # a zero cell leaves the picture as it is
    np.testing.assert_array_equal(overlay(view, [[0.0]]), view)
    with pytest.raises(ValueError, match="2-D grid"):
        overlay(view, [1.0, 2.0])


def test_with_maps_the_scores_shown_are_the_ones_the_maps_split(tiny_model, tmp_path):
    """The image's vector comes from the decomposition's own fp32 pass (no second forward
    pass), so in any precision the listed S of a descriptor is the S its map splits, and the
    answer says the image ran in fp32."""
    import whyclip
    from whyclip.ui.render.explanation_json import explanation_json

    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    with whyclip.open(tmp_path / "home", precision="bf16") as wc:
        wc.ingest(tmp_path / "lib.json", library="lib", model=str(tiny_model))
        (e,) = wc.explain([_picture(0)], library="lib", top=5, maps=True)
        encoder = wc.encoder(str(tiny_model))
        listed = {(c.name, d.prompt): d.scaled for c in e.classes for d in c.descriptors}
        for x in e.maps.maps:
            assert x.score == pytest.approx(listed[(x.class_name, x.prompt)], abs=2e-5)
        text = encoder.precisions["text"]
        assert explanation_json(e, encoder)["precision"] == ("fp32" if text == "fp32" else f"text {text}, images fp32")
        (plain,) = wc.explain([_picture(0)], library="lib", top=5)
        assert explanation_json(plain, encoder)["precision"] == encoder.precision


def test_maps_say_how_far_they_are_an_image_at_a_time(world):
    """With maps (seconds an image with the occlusion check), progress moves per image, not
    per batch of 32; an unreadable file counts too."""
    import whyclip

    wc, root = world
    (root / "broken.png").write_bytes(b"not a picture")
    calls = []
    paths = [root / "img0.png", root / "broken.png", root / "img1.png"]
    out = wc.explain_files(paths, library="lib", maps=whyclip.MapOptions(), progress=lambda d, t: calls.append((d, t)))
    assert [type(x).__name__ for x in out] == ["ImageFailure", "Explanation", "Explanation"]
    assert calls == [(2, 3), (3, 3)]
    assert all(x.maps is not None for x in out[1:])


def test_another_writer_placing_the_same_folder_first_does_not_fail_this_one(tmp_path, monkeypatch):
    """Two processes writing the same image's maps into one --maps folder: the other one's
    whole folder lands at the target just before this one renames its own there (made to
    happen here by a rename that lets it in first). This one neither fails nor leaves a
    temporary folder, and its own folder is what stays."""
    import os
    from pathlib import Path

    from whyclip.store import DescriptorMap, ImageMaps
    from whyclip.store.method.explanation import Explanation
    from whyclip.ui.render.maps import MapsWriter

    grid = [[0.5, -0.25], [0.0, 1.0]]
    maps = ImageMaps("decomposition", (2, 2), 4, None, False, [DescriptorMap("a", "d", "p", 2.0, 0.25, grid)])
    exp = Explanation("x.png", "lib", 1, "enc", "mean", 100.0, 2, [], [], None, [], maps=maps)
    view = np.full((16, 16, 3), 100, np.uint8)
    real = os.replace
    raced: list[Path] = []

    def replace(src, dst):
        dst = Path(dst)
        if dst.name == "x" and Path(src).name.startswith(".x.") and not raced:
            raced.append(dst)
            dst.mkdir(exist_ok=True)
            (dst / "theirs.txt").write_text("the other writer's folder")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    MapsWriter(tmp_path / "out").add(exp, view)
    assert raced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x"]
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["000-a-d.png", "maps.json", "view.png"]
