"""The core fresh-process round trip, needing nothing outside the repository: a library
file written here, the tiny random-weight CLIP, ``ingest`` then ``explain --json`` as a user
runs them (from a working directory holding their own ``store.py``, ``ingest.py`` and
``ui/``), the scores checked against numpy; images as people give them (EXIF-rotated,
transparent, unreadable) through the same command."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

LIBRARY = {
    "tree frog": ["bright green skin", "big round eyes", "sticky toe pads"],
    "banana": ["yellow curved peel", "brown spots"],
    "stop sign": ["red octagon", "white letters", "metal pole"],
    "sunflower": ["yellow petals", "dark seed head"],
}
LONG = "a descriptor that goes on " + "and on " * 40  # over CLIP's 77 tokens: a warning
USER_FILES = {
    "store.py": 'raise ImportError("user store.py imported")\n',
    "ingest.py": 'raise ImportError("user ingest.py imported")\n',
    "ui/__init__.py": 'raise ImportError("user ui/ imported")\n',
}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def whyclip(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m``, which puts the working directory first on sys.path: the user's files
    there must not shadow whyclip's packages."""
    return run([sys.executable, "-m", "whyclip.ui.cli.main", "--home", str(home), *args], cwd)


def png(path: Path, im: Image.Image, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """A user's folder (own store.py, ingest.py, ui/; the library file), ingested there by
    a relative path."""
    cwd = tmp_path_factory.mktemp("user")
    for name, text in USER_FILES.items():
        (cwd / name).parent.mkdir(exist_ok=True)
        (cwd / name).write_text(text)
    (cwd / "lib.json").write_text(json.dumps({**LIBRARY, "banana": [*LIBRARY["banana"], LONG]}))
    home = cwd / "home"
    r = whyclip(
        "ingest", "lib.json", "--library", "lib", "--model", str(tiny_model), "--precision", "fp32", home=home, cwd=cwd
    )
    assert r.returncode == 0, r.stderr
    assert "4 classes, 11 descriptors, 15 prompts (15 embedded, 0 from the cache)" in r.stdout
    return home, cwd, r


def test_ingest_then_explain_in_fresh_processes_scores_as_numpy_does(world, tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.images import read_image
    from whyclip.store import Store

    home, cwd, _ = world
    rng = np.random.default_rng(3)
    image = png(cwd / "photo.png", Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)))
    r = whyclip(
        "explain",
        "photo.png",
        "--library",
        "lib",
        "--json",
        "--top",
        "4",
        "--retrieve",
        "3",
        "--precision",
        "fp32",
        home=home,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lib = Store.open(home, create=False).load("lib")
    assert (out["whyclip_version"], out["encoder_id"], out["precision"]) == (
        importlib.metadata.version("whyclip"),
        lib.info.encoder_id,
        "fp32",
    )
    # the oracle: the encoder's image vector, the stored prompt vectors, numpy
    encoder = load_encoder(str(tiny_model), precision="fp32")
    x = encoder.embed_images([read_image(image)])[0][0].astype(np.float64)
    assert encoder.info.id == lib.info.encoder_id
    offsets, vectors = lib.matrices.offsets, np.asarray(lib.vectors, dtype=np.float64)
    sims = {name: vectors[offsets[c] : offsets[c + 1]] @ x for c, name in enumerate(lib.class_names)}
    scores = {name: s.mean() for name, s in sims.items()}
    logits = np.array([scores[n] for n in lib.class_names]) * lib.info.logit_scale
    probs = dict(zip(lib.class_names, np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(), strict=True))
    assert [c["class"] for c in out["classes"]] == sorted(scores, key=lambda n: -scores[n])
    for c in out["classes"]:
        assert c["score"] == pytest.approx(scores[c["class"]], abs=1e-5)
        assert c["probability"] == pytest.approx(probs[c["class"]], abs=1e-5)
        assert sorted(d["similarity"] for d in c["descriptors"]) == pytest.approx(sorted(sims[c["class"]]), abs=1e-5)
    assert {d["descriptor"] for d in out["classes"][0]["descriptors"]} <= {*LIBRARY[out["classes"][0]["class"]], LONG}
    best = sorted(((s, n) for n, v in sims.items() for s in v), reverse=True)[:3]
    assert [h["similarity"] for h in out["retrieved"]] == pytest.approx([s for s, _ in best], abs=1e-5)


def test_the_library_records_its_source_absolute_and_warned_before_the_bar(world):
    home, cwd, ingest = world
    libs = json.loads(whyclip("libraries", "--json", home=home, cwd=cwd).stdout)
    assert libs[0]["source"] == str((cwd / "lib.json").resolve())
    warned = ingest.stderr.find("warning: 1 prompt(s) exceed CLIP's 77-token limit")
    bar = ingest.stderr.find("embedding prompts")  # tqdm draws on stderr, tty or not
    assert 0 <= warned < bar, ingest.stderr


def test_exif_rotated_and_transparent_images_score_as_their_upright_pixels_on_white(world):
    home, cwd, _ = world
    rng = np.random.default_rng(5)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: rotate 90 degrees clockwise to show
    png(cwd / "rotated.jpg", Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)), exif=exif.tobytes())
    stored = np.asarray(Image.open(cwd / "rotated.jpg").convert("RGB"))  # decoded, not turned
    png(cwd / "upright.png", Image.fromarray(np.ascontiguousarray(np.rot90(stored, k=-1))))
    png(cwd / "as-stored.png", Image.fromarray(stored))
    rgba = rng.integers(0, 256, (48, 40, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0
    png(cwd / "rgba.png", Image.fromarray(rgba, "RGBA"))
    a = rgba[..., 3:].astype(np.float64) / 255
    png(cwd / "white.png", Image.fromarray(np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)))
    png(cwd / "black.png", Image.fromarray(rgba, "RGBA").convert("RGB"))  # what a plain conversion gives
    got = {}
    # each pair in a batch of its own: a vector's last bits can depend on the batch around it
    for names in (["rotated.jpg", "upright.png"], ["rgba.png", "white.png"], ["as-stored.png", "black.png"]):
        r = whyclip("explain", *names, "--library", "lib", "--json", "--precision", "fp32", home=home, cwd=cwd)
        assert r.returncode == 0, r.stderr
        got.update(
            {
                Path(o["image"]).name: [(c["class"], c["score"]) for c in o["classes"]]
                for o in map(json.loads, r.stdout.splitlines())
            }
        )
    assert got["rotated.jpg"] == got["upright.png"]
    assert got["rotated.jpg"] != got["as-stored.png"]
    assert got["rgba.png"] == got["white.png"]
    assert got["rgba.png"] != got["black.png"]


def test_a_batch_with_unreadable_files_explains_the_rest(world):
    home, cwd, _ = world
    png(cwd / "good.png", Image.new("RGB", (30, 20), (20, 160, 40)))
    (cwd / "notes.png").write_text("not an image at all\n")
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, format="PNG")
    (cwd / "cut.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    r = whyclip(
        "explain", "notes.png", "good.png", "cut.png", "missing.png", "--library", "lib", "--json", home=home, cwd=cwd
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert [Path(json.loads(line)["image"]).name for line in r.stdout.splitlines()] == ["good.png"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 3
    for name, reason in (
        ("notes.png", "not an image"),
        ("cut.png", "truncated or corrupt"),
        ("missing.png", "no such image file"),
    ):
        assert [e for e in errors if name in e and reason in e], (name, r.stderr)
    none = whyclip("explain", "notes.png", "missing.png", "--library", "lib", home=home, cwd=cwd)
    assert none.returncode == 1
    assert none.stdout == ""
    assert "Traceback" not in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1
    assert "notes.png" in none.stderr
    assert "missing.png" in none.stderr


def test_user_modules_in_the_working_directory_do_not_matter(world):
    _home, cwd, _ = world
    script = Path(sys.executable).with_name("whyclip")
    for args in (
        [str(script), "--help"],
        [sys.executable, "-m", "whyclip.ui.cli.main", "--help"],
        [sys.executable, "-c", "from whyclip.ingest import load_encoder; import whyclip.store, whyclip.ui.cli.main"],
    ):
        r = run(args, cwd)
        assert r.returncode == 0, (args, r.stderr)
        assert "user " not in r.stderr, (args, r.stderr)
    assert "whyclip: explainable" in run([str(script), "--help"], cwd).stdout


def test_the_test_model_builder_stays_out_of_other_commands(world):
    home, cwd, _ = world
    png(cwd / "plain.png", Image.new("RGB", (20, 20), (200, 200, 0)))
    check = (
        "import atexit, sys\n"
        "TM = 'whyclip.ingest.encoder.testmodel'\n"
        "atexit.register(lambda: print('loaded:', TM in sys.modules, file=sys.stderr))\n"
        "import whyclip.ui.cli.main\n"
        "print('after import:', 'whyclip.ingest.encoder.testmodel' in sys.modules, file=sys.stderr)\n"
        "sys.argv = ['whyclip', '--home', sys.argv[1], 'explain', 'plain.png', '--library', 'lib']\n"
        "whyclip.ui.cli.main.main()\n"
    )
    r = run([sys.executable, "-c", check, str(home)], cwd)
    assert r.returncode == 0, r.stderr
    assert "after import: False" in r.stderr
    assert "loaded: False" in r.stderr
