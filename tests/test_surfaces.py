"""One core, every surface: the command line, the HTTP service, the Python API and the
dashboard give the same explanation of the same image, because each calls the explanation
service (``whyclip.ingest.services.explain``) and only renders its answer. The fake encoder
makes every number exact; the library has a class without descriptors, so the fallback path
is compared too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

import whyclip
from tests.helpers import ROOT
from tests.helpers.fakes import FROG_CONCEPTS, FROG_LIBRARY, install_fake, planted_png
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.cli.main import cli

CONCEPTS, LIBRARY = FROG_CONCEPTS, FROG_LIBRARY
FROG = planted_png(["protruding eyes", "bright green colour", "yellow peel"], size=32)
PROVENANCE = ("whyclip_version", "encoder_id", "precision")  # what the CLI and the service add to to_dict()


@pytest.fixture
def fake(monkeypatch, fresh_streamlit_caches):
    return install_fake(monkeypatch, CONCEPTS)


@pytest.fixture
def workspace(tmp_path, fake):
    """Library 'frogs' ingested through the Python API into $WHYCLIP_HOME (the conftest's)."""
    with whyclip.open() as wc:
        report = wc.ingest(LIBRARY, library="frogs")
        assert report.info.version == 1
        assert report.info.n_classes == 4
        yield wc


def comparable(record: dict) -> dict:
    """An explanation's JSON without what names the image or the process that made it."""
    return {k: v for k, v in record.items() if k not in ("image", *PROVENANCE)}


def test_cli_http_and_python_api_give_the_same_explanation(workspace, tmp_path, monkeypatch):
    image = tmp_path / "frog.png"
    image.write_bytes(FROG)
    (api,) = workspace.explain([image], library="frogs", top=4, retrieve=6)

    result = CliRunner().invoke(
        cli, ["explain", str(image), "--library", "frogs", "--top", "4", "--retrieve", "6", "--json"]
    )
    assert result.exit_code == 0, result.output
    (from_cli,) = [json.loads(line) for line in result.stdout.splitlines()]

    monkeypatch.setenv("WHYCLIP_API_KEYS", "k" * 20)
    with TestClient(create_app(ServiceSettings())) as client:
        r = client.post(
            "/v1/explain",
            files=[("image", ("frog.png", FROG, "image/png"))],
            data={"library": "frogs", "top": "4", "retrieve": "6"},
        )
    assert r.status_code == 200, r.text
    (from_http,) = r.json()["explanations"]

    assert api.predicted == "tree frog"
    assert len(api.classes) == 4
    assert len(api.retrieved) == 6
    assert comparable(from_cli) == comparable(api.to_dict())
    assert comparable(from_http) == comparable(api.to_dict())
    assert {k: from_cli[k] for k in PROVENANCE} == {k: from_http[k] for k in PROVENANCE}
    assert from_cli["image"] == str(image)
    assert from_http["image"] == "frog.png"


def test_the_python_api_takes_paths_pictures_and_vectors_alike(workspace, tmp_path, fake):
    from whyclip.ingest import read_image

    (tmp_path / "imgs").mkdir()
    path = tmp_path / "imgs" / "frog.png"
    path.write_bytes(FROG)
    picture = read_image(path)
    by_path = workspace.explain(tmp_path / "imgs", library="frogs")  # a folder
    by_picture = workspace.explain([picture], library="frogs", names=["frog"])
    by_vector = workspace.explain(fake.embed_images([picture])[0], library="frogs", names=["frog"])
    assert comparable(by_path[0].to_dict()) == comparable(by_picture[0].to_dict()) == comparable(by_vector[0].to_dict())
    assert by_picture[0].image == "frog"


def test_the_python_api_says_what_is_wrong_in_one_line(workspace, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(whyclip.InputError, match=r"notes\.png"):
        workspace.explain([bad], library="frogs")
    good = tmp_path / "frog.png"
    good.write_bytes(FROG)
    results = workspace.explain_files([bad, good], library="frogs")
    assert isinstance(results[0], whyclip.ImageFailure)
    assert "notes.png" in results[0].error
    assert isinstance(results[1], whyclip.Explanation)
    assert results[1].predicted == "tree frog"
    with pytest.raises(whyclip.LibraryNotFound, match="nope"):
        workspace.explain([bad], library="nope")
    with pytest.raises(whyclip.InputError, match="no class 'frogg'"):
        workspace.explain([bad], library="frogs", compare=("frogg", "banana"))
    with pytest.raises(whyclip.InputError, match="top must be between"):
        workspace.explain([bad], library="frogs", top=0)
    with pytest.raises(whyclip.InputError, match="not a mix"):
        workspace.explain([bad, object()], library="frogs")


def test_the_dashboard_shows_the_python_api_explanation(workspace, fake):
    from whyclip.ingest.images import read_image_bytes

    at = AppTest.from_file(str(ROOT / "ui" / "dashboard" / "streamlit_app.py"), default_timeout=60).run()
    at.file_uploader[0].set_value([("frog.png", FROG, "image/png")]).run()
    assert not at.exception
    (api,) = workspace.explain([read_image_bytes("frog.png", FROG)], library="frogs", names=["frog.png"], top=5)
    tables = [d.value for d in at.dataframe]
    classes, descriptors = tables[0], tables[1]
    assert list(classes["class"]) == [c.name for c in api.classes]
    assert list(classes["score"]) == pytest.approx([c.score for c in api.classes], abs=1e-6)
    assert list(classes["probability"]) == pytest.approx([c.probability for c in api.classes], abs=1e-6)
    assert list(descriptors["descriptor"]) == [d.descriptor for d in api.classes[0].descriptors]
    assert list(descriptors["S"]) == pytest.approx([d.scaled for d in api.classes[0].descriptors], abs=1e-4)
    assert list(tables[-1]["descriptor"]) == [r.descriptor for r in api.retrieved]


def test_descriptors_listed_per_class_are_bounded_and_counted(workspace, tmp_path, fake):
    """A class's evidence is listed up to the bound, best first; the rest are counted (in the
    JSON and the text), and the score still counts every descriptor."""
    from whyclip import ExplainLimits

    many = {"tree frog": [f"trait {i}" for i in range(30)] + ["protruding eyes"], "banana": ["yellow peel"], "x": ["y"]}
    workspace.ingest(many, library="many")
    image = tmp_path / "frog.png"
    image.write_bytes(FROG)
    (full,) = workspace.explain([image], library="many", top=3)
    bounded_ws = whyclip.Workspace(workspace.store, limits=ExplainLimits(max_descriptors_listed=4))
    (cut,) = bounded_ws.explain([image], library="many", top=3)
    frog_full = next(c for c in full.classes if c.name == "tree frog")
    frog_cut = next(c for c in cut.classes if c.name == "tree frog")
    assert frog_cut.descriptors == frog_full.descriptors[:4]
    assert frog_cut.descriptors_not_listed == 27
    assert frog_cut.score == frog_full.score
    assert "descriptors_not_listed" not in json.dumps(full.to_dict())
    d = cut.to_dict()
    assert next(c for c in d["classes"] if c["class"] == "tree frog")["descriptors_not_listed"] == 27
    assert whyclip.Explanation.from_dict(d) == cut
    assert "... 27 more" in cut.to_text()


def test_every_surface_inherits_the_pixel_bound_of_one_call(workspace, tmp_path, fake, monkeypatch):
    """The decoded pixels held at once are bounded by the core: files are batched under the
    bound (each batch is one encode), pictures over it are refused in one line, and the HTTP
    service answers 413 from the headers alone, before decoding."""
    from whyclip import ExplainLimits
    from whyclip.ingest import read_image
    from whyclip.ui.api.settings import Limits

    paths = []
    for i in range(5):  # 32 x 32 = 1,024 pixels each
        paths.append(tmp_path / f"frog{i}.png")
        paths[-1].write_bytes(FROG)
    small = whyclip.Workspace(workspace.store, limits=ExplainLimits(max_batch_pixels=2 * 1024))
    fake.image_batches.clear()
    results = small.explain_files(paths, library="frogs")
    assert [r.predicted for r in results] == ["tree frog"] * 5
    assert fake.image_batches == [2, 2, 1]
    with pytest.raises(whyclip.InputError, match="3 images of 3,072 pixels together are over the limit of 2,048"):
        small.explain([read_image(p) for p in paths[:3]], library="frogs")

    monkeypatch.setenv("WHYCLIP_API_KEYS", "k" * 20)
    with TestClient(create_app(ServiceSettings(limits=Limits(max_request_pixels=2 * 1024)))) as client:
        files = [("image", (f"f{i}.png", FROG, "image/png")) for i in range(3)]
        r = client.post("/v1/explain", files=files, data={"library": "frogs"})
        assert r.status_code == 413, r.text
        assert "3,072 pixels together" in r.json()["error"], r.text
        ok = client.post("/v1/explain", files=files[:2], data={"library": "frogs"})
        assert ok.status_code == 200, ok.text


def test_a_workspace_loads_each_model_once_however_it_is_spelled(tiny_model, tmp_path, monkeypatch):
    """ingest with a relative folder, explain with the library's (absolute) model name: one load."""
    from whyclip import ingest

    loads = []
    real = ingest.load_encoder
    monkeypatch.setattr(ingest, "load_encoder", lambda model, *a, **k: loads.append(model) or real(model, *a, **k))
    monkeypatch.chdir(tiny_model.parent)
    with whyclip.open(home=tmp_path / "home") as wc:
        wc.ingest(
            {"tree frog": ["protruding eyes"], "cat": ["whiskers"], "owl": ["feathers"]},
            library="a",
            model=tiny_model.name,
        )
        image = tmp_path / "frog.png"
        image.write_bytes(FROG)
        (exp,) = wc.explain([image], library="a")
    assert exp.library == "a", loads
    assert len(loads) == 1, loads


def _approx(record: dict, tol: float = 1e-5):
    """``record`` with every float compared to ``tol`` (texts, ranks and keys exactly)."""
    if isinstance(record, dict):
        return {k: _approx(v, tol) for k, v in record.items()}
    if isinstance(record, list):
        return [_approx(v, tol) for v in record]
    return pytest.approx(record, abs=tol) if isinstance(record, float) else record


def test_the_tiny_clip_explains_a_users_odd_images_alike_everywhere(tiny_model, tmp_path, monkeypatch):
    """Through the real model path (the image tower, its preprocessing, batching): a palette
    PNG with transparency and a tall EXIF-rotated JPEG give the same explanations from the
    CLI, the HTTP service and the Python API (fp32 everywhere, so only rounding may differ)."""
    from PIL import Image

    odd = tmp_path / "odd"
    odd.mkdir()
    palette = Image.new("P", (37, 23))
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    palette.putdata([(x * 7 + y * 3) % 256 for y in range(23) for x in range(37)])
    palette.info["transparency"] = 0
    palette.save(odd / "palette.png", transparency=0)
    tall = Image.new("RGB", (30, 90), (200, 40, 40))
    tall.paste((20, 160, 60), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: a viewer turns it a quarter
    tall.save(odd / "tall.jpg", exif=exif, quality=90)
    with whyclip.open(home=tmp_path / "home", precision="fp32") as wc:
        wc.ingest(
            {
                "tree frog": ["protruding eyes", "bright green colour"],
                "banana": ["yellow peel"],
                "stop sign": ["red octagon", "white letters"],
            },
            library="odd",
            model=str(tiny_model),
        )
        api = {Path(e.image).name: e.to_dict() for e in wc.explain(odd, library="odd", top=3, retrieve=4)}
    assert set(api) == {"palette.png", "tall.jpg"}
    assert api["palette.png"]["classes"] != api["tall.jpg"]["classes"]  # two images, two answers

    result = CliRunner().invoke(
        cli,
        [
            "--home",
            str(tmp_path / "home"),
            "explain",
            str(odd),
            "--library",
            "odd",
            "--top",
            "3",
            "--retrieve",
            "4",
            "--precision",
            "fp32",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    from_cli = {Path(r["image"]).name: r for r in map(json.loads, result.stdout.splitlines())}

    monkeypatch.setenv("WHYCLIP_API_KEYS", "k" * 20)
    settings = ServiceSettings(home=str(tmp_path / "home"), model=str(tiny_model), precision="fp32")
    with TestClient(create_app(settings)) as client:
        files = [
            ("image", (p.name, p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg"))
            for p in sorted(odd.iterdir())
        ]
        r = client.post("/v1/explain", files=files, data={"library": "odd", "top": "3", "retrieve": "4"})
    assert r.status_code == 200, r.text
    from_http = {e["image"]: e for e in r.json()["explanations"]}

    for name in api:
        assert comparable(from_cli[name]) == _approx(comparable(api[name]))
        assert from_http[name]["encoder"] == Path(api[name]["encoder"]).name  # the server's path stays on it
        assert comparable(from_http[name]) == _approx(comparable({**api[name], "encoder": "tiny"}))
