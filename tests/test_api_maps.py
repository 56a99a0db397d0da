"""Maps over HTTP (issue 22): ``maps=true`` on ``POST /v1/explain`` gives each explanation the
``maps`` the core makes, within the server's bounds on images with maps and with the occlusion
check; ``whyclip explain --server URL --maps DIR`` draws them as the local ``--maps`` does.

On the tiny CLIP served in fp32, so that a map's S is the explanation's S of the same prompt."""

from __future__ import annotations

import io
import json
from contextlib import nullcontext

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy.stats import spearmanr

from tests.helpers.cli import invoke
from tests.helpers.service import FROG
from tests.helpers.service import explain as fake_explain
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.api.schemas import ExplainOut
from whyclip.ui.api.settings import SETTINGS_ENV, Limits

TOL = 1e-4
SMALL = {"tree frog": ["bright green skin", "big round eyes"], "banana": ["yellow peel"], "lemon": []}
# six classes, one of 60 descriptors: with top 6 and 50 listed per class, up to 6 x 50 = 300 maps
BIG = {"class 0": [f"feature number {i}" for i in range(60)], **{f"class {k}": [f"trait {k}"] for k in range(1, 6)}}


def png(size=(50, 37), mode="RGB", colour=(30, 200, 40)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour if mode != "RGBA" else (*colour, 120)).save(out, "PNG")
    return out.getvalue()


GREEN = png()
WIDE = png((80, 50), "RGBA", (200, 200, 40))


@pytest.fixture(scope="module")
def tiny_home(tiny_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("maps") / "home"
    for name, content in (("frogs", SMALL), ("big", BIG)):
        path = home.parent / f"{name}.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        done = invoke("ingest", path, "--library", name, "--model", tiny_model, home=home)
        assert done.returncode == 0, done.stderr
    return home


def tiny_app(home, model, limits: Limits | None = None):
    return TestClient(
        create_app(ServiceSettings(home=str(home), model=str(model), precision="fp32", limits=limits or Limits()))
    )


@pytest.fixture(scope="module")
def tiny(tiny_home, tiny_model):
    with tiny_app(tiny_home, tiny_model) as c:
        yield c


def post(client, images, **form):
    files = [("image", (name, data, "image/png")) for name, data in images]
    return client.post("/v1/explain", files=files, data={"library": "frogs", **form})


def listed(explanation: dict) -> dict[tuple[str, str], float]:
    """(class, descriptor) -> S of every descriptor the explanation lists."""
    return {(c["class"], d["descriptor"]): d["scaled"] for c in explanation["classes"] for d in c["descriptors"]}


def test_maps_add_up_to_the_explanations_s(tiny):
    r = post(tiny, [("green.png", GREEN), ("wide.png", WIDE)], maps="true")
    assert r.status_code == 200, r.text
    assert "maps" in r.json()["seconds"]
    for e in r.json()["explanations"]:
        maps = e["maps"]
        assert maps["method"] == "decomposition"
        assert maps["size"] == [32, 32]  # the tiny model's input
        assert maps["occlusion_grid"] is None
        assert maps["dense"] is False
        s = listed(e)
        # every listed descriptor of the shown classes gets one map (the lemon's baseline prompt too)
        assert sorted((m["class"], m["descriptor"]) for m in maps["maps"]) == sorted(s)
        for m in maps["maps"]:
            patches = np.asarray(m["patches"])
            assert list(patches.shape) == maps["grid"]
            assert patches.sum() + m["remainder"] == pytest.approx(m["score"], abs=TOL)
            assert m["score"] == pytest.approx(s[(m["class"], m["descriptor"])], abs=TOL)
            assert m["dense"] is None
            assert m["occlusion"] is None
            assert m["agreement"] is None
    without = post(tiny, [("green.png", GREEN)])  # a key only where maps were asked for
    assert without.status_code == 200, without.text
    assert "maps" not in without.json()["explanations"][0]


def test_with_maps_the_image_is_explained_by_the_maps_own_fp32_pass(tiny_home, tiny_model):
    """A server in lower precision: with maps, each image's vector comes from its fp32
    decomposition (as on every surface), so the maps split exactly the S listed."""
    with TestClient(create_app(ServiceSettings(home=str(tiny_home), model=str(tiny_model)))) as c:
        r = post(c, [("green.png", GREEN), ("wide.png", WIDE)], maps="true")
        assert r.status_code == 200, r.text
        for e in r.json()["explanations"]:
            assert e["precision"].endswith("fp32")  # "fp32", or "text bf16, images fp32"
            s = listed(e)
            for m in e["maps"]["maps"]:
                assert m["score"] == pytest.approx(s[(m["class"], m["descriptor"])], abs=TOL)


def test_occlusion_and_dense_maps(tiny):
    r = post(tiny, [("green.png", GREEN), ("wide.png", WIDE)], maps="true", check="occlusion", dense="true")
    assert r.status_code == 200, r.text
    # the answer fits the OpenAPI schema's maps (schemathesis' fake encoder has no maps to check)
    assert all(e.maps is not None for e in ExplainOut.model_validate(r.json()).explanations)
    agreements = []
    for e in r.json()["explanations"]:
        maps = e["maps"]
        assert maps["dense"] is True
        side = maps["occlusion_grid"]
        assert side == min(maps["grid"][0], 7)  # the patch grid, at most 7 x 7
        for m in maps["maps"]:
            assert list(np.shape(m["dense"])) == maps["grid"]
            assert np.shape(m["occlusion"]) == (side, side)
            # the occlusion grid is the patch grid here, so the agreement is Spearman's rho of the two
            a, b = np.ravel(m["patches"]), np.ravel(m["occlusion"])
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                assert m["agreement"] is None
            else:
                assert m["agreement"] == pytest.approx(spearmanr(a, b).statistic, abs=1e-9)
                agreements.append(m["agreement"])
    assert agreements  # the random tower's maps are not flat


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"check": "occlusion"}, "check"),
        ({"dense": "true"}, "dense"),
        ({"check": "occlusion", "dense": "true"}, "check"),
    ],
)
def test_check_and_dense_go_with_maps(tiny, form, field):
    r = post(tiny, [("green.png", GREEN)], **form)
    assert r.status_code == 422
    assert r.json()["error"] == f"bad request: {field} goes with maps: add maps=true"


def test_an_unknown_check_is_422(tiny):
    r = post(tiny, [("green.png", GREEN)], maps="true", check="gradcam")
    assert r.status_code == 422
    assert r.json()["error"] == "bad request: check: 'gradcam' is not one of occlusion"


def test_images_with_maps_are_bounded(tiny):
    r = post(tiny, [(f"g{i}.png", GREEN) for i in range(9)], maps="true")
    assert r.status_code == 413
    assert r.json()["error"] == (
        "9 images with maps in one request; the limit is 8 (whyclip serve --max-map-images): "
        "send fewer images per request"
    )
    r = post(tiny, [(f"g{i}.png", GREEN) for i in range(3)], maps="true", check="occlusion")
    assert r.status_code == 413
    assert r.json()["error"] == (
        "3 images with check=occlusion in one request; the limit is 2 (whyclip serve --max-occlusion-images): "
        "send fewer images per request"
    )
    # the same images without maps are answered
    assert post(tiny, [(f"g{i}.png", GREEN) for i in range(9)]).status_code == 200


def test_the_bounds_are_the_servers_settings(tiny_home, tiny_model):
    with tiny_app(tiny_home, tiny_model, Limits(max_map_images=1, max_occlusion_images=1)) as c:
        r = post(c, [("a.png", GREEN), ("b.png", GREEN)], maps="true")
        assert r.status_code == 413
        assert "the limit is 1 (whyclip serve --max-map-images)" in r.json()["error"]
        assert post(c, [("a.png", GREEN)], maps="true", check="occlusion").status_code == 200


def test_maps_per_image_over_the_core_limit_is_422(tiny):
    r = post(tiny, [("green.png", GREEN)], library="big", top="6", maps="true")
    assert r.status_code == 422
    assert r.json()["error"] == (
        "maps for up to 300 descriptors per image is over the limit of 256: list fewer per class "
        "(descriptors 32) or show fewer classes (top)"
    )
    r = post(tiny, [("green.png", GREEN)], library="big", top="6", maps="true", descriptors="32")
    assert r.status_code == 200, r.text
    assert len(r.json()["explanations"][0]["maps"]["maps"]) == 32 + 5  # class 0's listed and one of each other


def test_an_encoder_without_an_image_tower_is_refused(client):
    r = fake_explain(client, [("frog.png", FROG)], maps="true")
    assert r.status_code == 422
    assert r.json()["error"] == (
        "maps need a CLIP image tower, and this encoder (FakeEncoder) has none: explain without maps, "
        "or with a CLIP model"
    )


def test_explain_prepared_is_the_cores_explanation(tiny_home, tiny_model):
    """What the service calls with maps (images it decoded and prepared under its budget):
    the explanations ``explain_pictures`` gives, from pixel values or, as an encoder that
    takes pictures (sentence-transformers' CLIP, the default model) prepares them, pictures."""
    from whyclip.ingest.encoder.prepared import join_prepared, prepare_one
    from whyclip.ingest.images import read_image_bytes
    from whyclip.ingest.services.explain import ExplainOptions, open_encoder, plan_explain
    from whyclip.ingest.services.maps import MapOptions
    from whyclip.store import Store

    store = Store.open(tiny_home)
    encoder = open_encoder(store, str(tiny_model), precision="fp32")
    pictures = [read_image_bytes(n, d) for n, d in (("green.png", GREEN), ("wide.png", WIDE))]
    names = ["green.png", "wide.png"]
    for maps in (MapOptions(check="occlusion"), None):
        explainer = plan_explain(store, "frogs", options=ExplainOptions(maps=maps)).with_encoder(encoder)
        expected = [e.to_dict() for e in explainer.explain_pictures(pictures, names)]
        assert all(("maps" in e) == (maps is not None) for e in expected)
        from_pixels = explainer.explain_prepared(join_prepared([prepare_one(encoder, p) for p in pictures]), names)
        same_maps([e.to_dict() for e in from_pixels], expected)
        if maps is not None:
            same_maps([e.to_dict() for e in explainer.explain_prepared(list(pictures), names)], expected)


def test_serve_flags_set_the_bounds(monkeypatch, tmp_path):
    import uvicorn

    monkeypatch.setenv(SETTINGS_ENV, "")  # restored afterwards: serve sets it for its workers
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    done = invoke("serve", "--port", "0", "--max-map-images", "3", "--max-occlusion-images", "1", home=tmp_path)
    assert done.returncode == 0, done.output
    limits = ServiceSettings.from_env().limits
    assert (limits.max_map_images, limits.max_occlusion_images) == (3, 1)
    defaults = invoke("serve", "--port", "0", home=tmp_path)
    assert defaults.returncode == 0, defaults.output
    assert ServiceSettings.from_env().limits == Limits()


# -- whyclip explain --server URL --maps DIR ------------------------------------------------------


def test_the_view_is_what_the_model_saw(tiny_model):
    """The picture the service's maps cover, made here from the input size alone, is the one
    the model's own processor makes (resized, cropped, transparency over white)."""
    from whyclip.ingest import load_encoder
    from whyclip.ui.cli.remote import model_view

    model = load_encoder(str(tiny_model), precision="fp32").map_model()
    rng = np.random.default_rng(7)
    for width, height in [(50, 37), (37, 50), (80, 50), (33, 32), (20, 90), (32, 32)]:
        noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))  # a shift would show
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        translucent = noise.convert("RGBA")
        translucent.putalpha(alpha)
        for picture in (noise, noise.convert("L"), noise.convert("P"), translucent):
            seen = model.view(model.pixels(picture))
            assert np.array_equal(model_view(picture, seen.shape[:2]), seen), (width, height, picture.mode)


def remote_and_local(client, home, tmp_path, monkeypatch, extra=()):
    monkeypatch.setattr(httpx, "Client", lambda **kwargs: nullcontext(client))
    images = []
    for name, data in (("green.png", GREEN), ("wide.png", WIDE)):
        (tmp_path / name).write_bytes(data)
        images.append(tmp_path / name)
    common = ["explain", *images, "--library", "frogs", *extra]
    remote = invoke(*common, "--server", "http://testserver", "--maps", tmp_path / "remote", home=home)
    local = invoke(*common, "--precision", "fp32", "--maps", tmp_path / "local", home=home)
    return remote, local


def same_maps(a: dict, b: dict) -> None:
    """Two maps.json the same, numbers to float precision."""
    if isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for k in a:
            same_maps(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same_maps(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    else:
        assert a == b


def check_same_folders(tmp_path) -> None:
    for image in ("green", "wide"):
        remote, local = tmp_path / "remote" / image, tmp_path / "local" / image
        maps = json.loads((remote / "maps.json").read_text(encoding="utf-8"))
        same_maps(maps, json.loads((local / "maps.json").read_text(encoding="utf-8")))
        assert np.array_equal(np.asarray(Image.open(remote / "view.png")), np.asarray(Image.open(local / "view.png")))
        pngs = sorted(p.name for p in remote.glob("*.png") if p.name != "view.png")
        assert pngs == sorted(p.name for p in local.glob("*.png") if p.name != "view.png")
        assert len(pngs) == len(maps["maps"]) == 4  # one per map: 3 descriptors and the lemon's baseline
        for p in pngs:
            assert Image.open(remote / p).format == "PNG"
    index = (tmp_path / "remote" / "index.html").read_text(encoding="utf-8")
    assert 'src="green/view.png"' in index
    assert 'src="wide/view.png"' in index


def test_explain_server_maps_writes_what_the_local_command_writes(tiny, tiny_home, tmp_path, monkeypatch):
    remote, local = remote_and_local(tiny, tiny_home, tmp_path, monkeypatch, ["--check", "occlusion", "--dense"])
    assert remote.returncode == local.returncode == 0, remote.output
    assert remote.stdout == local.stdout
    assert f"maps of 2 image(s) in {tmp_path / 'remote' / 'index.html'}" in remote.stderr
    check_same_folders(tmp_path)


def test_explain_server_maps_json_carries_the_maps(tiny, tiny_home, tmp_path, monkeypatch):
    remote, local = remote_and_local(tiny, tiny_home, tmp_path, monkeypatch, ["--json"])
    assert remote.returncode == local.returncode == 0, remote.output
    for r, loc in zip(remote.stdout.splitlines(), local.stdout.splitlines(), strict=True):
        r_maps, l_maps = json.loads(r)["maps"], json.loads(loc)["maps"]
        same_maps(r_maps, l_maps)


def test_explain_server_maps_refused_is_one_line(client, home, tmp_path, monkeypatch):
    monkeypatch.setattr(httpx, "Client", lambda **kwargs: nullcontext(client))
    (tmp_path / "frog.png").write_bytes(FROG)
    r = invoke(
        "explain",
        tmp_path / "frog.png",
        "--library",
        "frogs",
        "--server",
        "http://testserver",
        "--maps",
        tmp_path / "m",
    )
    assert r.returncode == 1
    assert r.stderr == (
        "Error: the service at http://testserver refused the request: maps need a CLIP image tower, and this "
        "encoder (FakeEncoder) has none: explain without maps, or with a CLIP model\n"
    )
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_explain_server_maps_against_a_real_server(tiny_home, tiny_model, tmp_path, monkeypatch):
    """The same, from a ``whyclip serve`` process on loopback."""
    from tests.helpers.server import KEY, serving

    with serving(tiny_home, tiny_model, extra_args=["--precision", "fp32"]) as (_proc, client):
        url = str(client.base_url)
        images = []
        for name, data in (("green.png", GREEN), ("wide.png", WIDE)):
            (tmp_path / name).write_bytes(data)
            images.append(tmp_path / name)
        common = ["explain", *images, "--library", "frogs", "--check", "occlusion"]
        remote = invoke(*common, "--server", url, "--api-key", KEY, "--maps", tmp_path / "remote", home=tiny_home)
    local = invoke(*common, "--precision", "fp32", "--maps", tmp_path / "local", home=tiny_home)
    assert remote.returncode == local.returncode == 0, remote.output
    assert remote.stdout == local.stdout
    check_same_folders(tmp_path)
