"""One rule lists a folder's images on every surface: eval's dataset folders, explain,
generate-pairs' --pairs-from-images and ``whyclip ui --images`` (issue 21, item 3).

The rule (:func:`whyclip.ingest.images.list_images`): recursive, names starting with "."
skipped, image suffixes in any case, sorted by path, bounded; each surface says what it found.
The oracle is the tree each test writes, and the files it meant to be images.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.chat_server import ChatServer
from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake
from tests.helpers.planted import CONCEPTS, IMAGES, LIBRARY, write_dataset
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.images import IMAGE_SUFFIXES, expand_image_paths, list_images
from whyclip.ingest.services.pair_ingest import image_files
from whyclip.store import InputError

LOOKED_FOR = ", ".join(sorted(IMAGE_SUFFIXES))
N_IMAGES = sum(len(files) for files in IMAGES.values())


def _with_noise(root):
    """Eval's layout (a subfolder per class) plus what no listing may take: hidden files and
    folders (a hidden file is garbage, so reading it would fail), and files that are no images."""
    write_dataset(root)
    (root / "tree frog" / ".f3.png").write_bytes(b"not an image")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "t.png").write_bytes(b"not an image")
    (root / "banana" / "notes.txt").write_text("a banana")
    (root / "README").write_text("read me")
    return root


def _images(root):
    return sorted(root / folder / name for folder, files in IMAGES.items() for name, _ in files)


# -- the rule --------------------------------------------------------------------------------


def test_list_images_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = _with_noise(tmp_path / "data")
    (root / "banana" / "deeper").mkdir()
    (root / "banana" / "deeper" / "B4.JPG").write_bytes(b"x")  # any case; not decoded by the listing
    (root / "top.png").write_bytes(b"x")
    listing = list_images(root)
    assert listing.files == sorted([*_images(root), root / "banana" / "deeper" / "B4.JPG", root / "top.png"])
    assert listing.folders == len(IMAGES) + 2
    assert listing.summary == f"found {N_IMAGES + 2} images in {len(IMAGES) + 2} folders under {root}"


def test_one_image_in_one_folder_is_singular(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    assert list_images(tmp_path).summary == f"found 1 image in 1 folder under {tmp_path}"


def test_no_images_says_what_was_looked_for(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    listing = list_images(tmp_path)
    assert listing.files == []
    assert listing.summary == (
        f"no images under {tmp_path} (looked recursively for {LOOKED_FOR}; hidden files and folders skipped)"
    )


def test_a_tree_over_the_limit_is_refused(tmp_path):
    for i in range(4):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "a.png").write_bytes(b"x")
    assert len(list_images(tmp_path, limit=8).files) == 4  # 4 folders + 4 files: at the limit
    with pytest.raises(InputError) as err:
        list_images(tmp_path, limit=7)
    assert str(err.value) == (
        f"{tmp_path}: more than 7 files and folders under it, the most whyclip looks through in one folder: "
        "give a subfolder"
    )


def test_a_symlink_loop_is_not_followed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert list_images(tmp_path).files == [tmp_path / "a" / "x.png"]


# -- the surfaces ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    install_fake(monkeypatch, CONCEPTS)
    h = tmp_path / "home"
    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    assert invoke("ingest", tmp_path / "lib.json", "-l", "planted", "-t", "bare", home=h).returncode == 0
    return h


def test_explain_takes_evals_layout_and_says_what_it_found(tmp_path, home):
    root = _with_noise(tmp_path / "data")
    done = invoke("explain", root, "-l", "planted", "--json", home=home)
    assert done.returncode == 0, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["image"] for e in shown] == [str(p) for p in _images(root)]
    assert done.stderr.splitlines()[0] == f"found {N_IMAGES} images in {len(IMAGES)} folders under {root}"
    assert expand_image_paths([root]) == _images(root)  # the Python API's rule too


def test_explain_of_a_folder_without_images_is_one_line(tmp_path, home):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    done = invoke("explain", tmp_path / "empty", "-l", "planted", home=home)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: no images under {tmp_path / 'empty'} (looked recursively for {LOOKED_FOR}; "
        "hidden files and folders skipped)"
    )


def test_eval_lists_its_dataset_by_the_rule_and_says_so(tmp_path, home):
    root = _with_noise(tmp_path / "data")
    assert read_dataset(root).items == [(p, p.parent.name) for p in _images(root)]
    done = invoke("eval", root, "-l", "planted", "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["n_images"] == N_IMAGES  # the hidden garbage was never read
    assert f"found {N_IMAGES} images in {len(IMAGES)} folders under {root}" in done.stderr.splitlines()


def test_generate_pairs_from_images_lists_by_the_rule_and_says_so(tmp_path, home, monkeypatch):
    root = _with_noise(tmp_path / "data")
    said: list[str] = []
    assert image_files(root, said.append) == _images(root)
    assert said == [f"found {N_IMAGES} images in {len(IMAGES)} folders under {root}"]
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("PAIRS_KEY", key)
    out = tmp_path / "pairs.json"
    with ChatServer(key) as server:
        done = invoke(
            "generate-pairs",
            "-l",
            "planted",
            "--pairs-from-images",
            root,
            "--margin",
            "1000",  # every image is ambiguous: this test is about which images are read
            "--out",
            out,
            "--model",
            "m",
            "--api-key-env",
            "PAIRS_KEY",
            "--base-url",
            server.base_url,
            home=home,
        )
    assert done.returncode == 0, done.stderr
    chosen = json.loads(out.read_text())["images"]
    assert (chosen["n_images"], chosen["skipped"]) == (N_IMAGES, 0)
    assert f"found {N_IMAGES} images in {len(IMAGES)} folders under {root}" in done.stderr.splitlines()


def _ui(home, folder, monkeypatch):
    """``whyclip ui --images FOLDER`` up to the point where it becomes the server."""
    started = []

    def execve(path, argv, env):
        started.append(env["WHYCLIP_UI_IMAGES"])
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(os, "name", "posix")
    done = invoke("ui", "--images", folder, "--port", "8599", home=home)
    assert done.returncode == 0, done.stderr
    assert started == [str(folder.resolve())]
    return done.stderr.splitlines()


def test_ui_says_what_its_images_folder_holds(tmp_path, home, monkeypatch):
    root = _with_noise(tmp_path / "data")
    assert _ui(home, root, monkeypatch)[0] == f"found {N_IMAGES} images in {len(IMAGES)} folders under {root}"
    (tmp_path / "none").mkdir()
    assert _ui(home, tmp_path / "none", monkeypatch)[0] == (
        f"warning: no images under {tmp_path / 'none'} (looked recursively for {LOOKED_FOR}; hidden files and "
        "folders skipped): the dashboard has none to pick from"
    )


APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")


def test_the_dashboard_offers_evals_layout_and_says_when_there_is_nothing(
    tmp_path, home, monkeypatch, fresh_streamlit_caches
):
    monkeypatch.setenv("WHYCLIP_HOME", str(home))
    root = _with_noise(tmp_path / "data")
    monkeypatch.setenv("WHYCLIP_UI_IMAGES", str(root))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    offered = [o for o in at.multiselect[0].options if o.startswith("folder: ")]
    assert offered == [f"folder: {p.relative_to(root).as_posix()}" for p in _images(root)]
    assert not [w for w in at.warning if "--images" in w.value]

    (tmp_path / "none").mkdir()
    monkeypatch.setenv("WHYCLIP_UI_IMAGES", str(tmp_path / "none"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [w.value for w in at.warning if "--images" in w.value] == [
        f"--images: no images under {tmp_path / 'none'} (looked recursively for {LOOKED_FOR}; hidden files and "
        "folders skipped)"
    ]
