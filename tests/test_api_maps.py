"""Maps over HTTP (issue 22): ``maps=true`` on ``POST /v1/explain`` gives each explanation the
``maps`` the core makes, within the server's bounds on images with maps and with the occlusion
check.

On the tiny CLIP served in fp32, so that a map's S is the explanation's S of the same prompt."""

from __future__ import annotations

import io
import json

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
