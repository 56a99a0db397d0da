"""The command line with a deterministic fake encoder: planted explanations, output
discipline, and every bad input giving one line, a non-zero exit and nothing written."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers.fakes import install_fake, planted_png
from whyclip.ui.cli.main import cli

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

CONCEPTS = [
    "protruding eyes",
    "bright green colour",
    "tree frog",
    "tailed frog",
    "brown or olive skin",
    "sticky toe pads",
]
LIBRARY = {
    "tree frog": ["sticky toe pads", "protruding eyes", "wet and hairless nose", "bright green colour"],
    "tailed frog": ["brown or olive skin", "a short tail-like extension", "flattened head"],
    "banana": ["yellow peel", "a long curved shape"],
    "plain class": [],
}


@pytest.fixture
def fake(monkeypatch):
    enc = install_fake(monkeypatch, CONCEPTS)
    return enc


def planted_image(path: Path, concepts: list[str]) -> Path:
    path.write_bytes(planted_png(concepts))
    return path


@pytest.fixture
def setup(tmp_path, fake):
    lib = tmp_path / "frogs.json"
    lib.write_text(json.dumps(LIBRARY), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(lib), "--library", "frogs"])
    assert result.exit_code == 0, result.output
    frog = planted_image(tmp_path / "frog.png", ["protruding eyes", "bright green colour"])
    return runner, frog, tmp_path


def run_json(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_planted_descriptors_explain_the_prediction(setup):
    runner, frog, _ = setup
    (out,) = run_json(runner, ["explain", str(frog), "--library", "frogs", "--json"])
    top = out["classes"][0]
    assert top["class"] == "tree frog"
    assert out["predicted"] == "tree frog"
    assert {d["descriptor"] for d in top["descriptors"][:2]} == {"protruding eyes", "bright green colour"}
    assert top["descriptors"][0]["prompt"].startswith("tree frog, which has ")
    # score is the mean of the listed raw similarities; probabilities come from the logit scale
    assert top["score"] == pytest.approx(sum(d["similarity"] for d in top["descriptors"]) / 4, abs=1e-6)
    assert out["logit_scale"] == 100.0
    scores = [c["score"] for c in out["classes"]]
    assert scores == sorted(scores, reverse=True)
    contrast = out["contrast"]
    assert (contrast["a"], contrast["b"]) == ("tree frog", out["classes"][1]["class"])
    assert {r["descriptor"] for r in contrast["rows"][:2]} == {"protruding eyes", "bright green colour"}
    assert all(r["favours"] == "tree frog" for r in contrast["rows"][:2])
    assert {r["descriptor"] for r in out["retrieved"][:2]} == {"protruding eyes", "bright green colour"}
    assert set(out) >= {"image", "library", "aggregate", "logit_scale", "classes", "baseline", "contrast", "retrieved"}
    assert {"class", "score", "probability"} <= set(out["baseline"][0])


def test_compare_names_the_planted_descriptors(setup):
    runner, frog, _ = setup
    (out,) = run_json(runner, ["explain", str(frog), "-l", "frogs", "--compare", "tailed frog", "tree frog", "--json"])
    rows = out["contrast"]["rows"]
    assert (out["contrast"]["a"], out["contrast"]["b"]) == ("tailed frog", "tree frog")
    assert {r["descriptor"] for r in rows[-2:]} == {"protruding eyes", "bright green colour"}
    assert all(r["favours"] == "tree frog" for r in rows[-2:])
    text = runner.invoke(cli, ["explain", str(frog), "-l", "frogs", "--compare", "tailed frog", "tree frog"]).stdout
    assert "tailed frog vs tree frog" in text
    assert 'S("protruding eyes")' in text


@pytest.mark.parametrize("aggregate", ["mean", "centroid", "max"])
def test_every_aggregate_and_empty_class_fallback(setup, aggregate):
    runner, frog, _ = setup
    (out,) = run_json(runner, ["explain", str(frog), "-l", "frogs", "-a", aggregate, "--top", "4", "--json"])
    assert out["aggregate"] == aggregate
    assert out["classes"][0]["class"] == "tree frog"
    plain = next(c for c in out["classes"] if c["class"] == "plain class")
    assert plain["descriptors"][0]["fallback"]
    assert plain["descriptors"][0]["prompt"] == "a photo of a plain class."


def test_top_one_still_contrasts_the_top_two(setup):
    runner, frog, _ = setup
    (out,) = run_json(runner, ["explain", str(frog), "-l", "frogs", "--top", "1", "--json"])
    assert len(out["classes"]) == 1
    assert out["contrast"]["a"] == "tree frog"
    assert out["contrast"]["b"] != "tree frog"


def test_json_stdout_is_clean_and_one_object_per_image(setup):
    runner, frog, tmp_path = setup
    other = planted_image(tmp_path / "brown.png", ["brown or olive skin"])
    outs = run_json(runner, ["explain", str(frog), str(other), "-l", "frogs", "--json"])
    assert [o["image"] for o in outs] == [str(frog), str(other)]
    assert outs[1]["classes"][0]["class"] == "tailed frog"


def test_a_folder_is_explained_in_batches_and_a_bad_image_is_skipped(setup, fake):
    runner, _frog, tmp_path = setup
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        planted_image(folder / f"img{i:02d}.png", ["brown or olive skin"] if i % 2 else ["protruding eyes"])
    (folder / "img17.png").write_bytes((folder / "img17.png").read_bytes()[:-30])  # pixels cut off: found at decode
    fake.image_batches.clear()
    result = runner.invoke(cli, ["explain", str(folder), "-l", "frogs", "--json"])
    assert result.exit_code == 1
    outs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(o["image"]).name for o in outs] == [f"img{i:02d}.png" for i in range(40) if i != 17]
    assert all(o["predicted"] == ("tailed frog" if int(Path(o["image"]).stem[3:]) % 2 else "tree frog") for o in outs)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert "img17.png" in errors[0]
    assert "truncated" in errors[0]
    assert fake.image_batches == [31, 8]  # 32 per batch, less the skipped one


def test_libraries_lists_versions_and_metadata(setup, monkeypatch):
    import whyclip.store.vectors.recall_tuning as calibration

    runner, _, tmp_path = setup
    runner.invoke(cli, ["ingest", str(tmp_path / "frogs.json"), "--library", "frogs", "--template", "bare"])
    infos = json.loads(runner.invoke(cli, ["libraries", "--json"]).stdout)
    assert len(infos) == 1
    i = infos[0]
    assert (i["name"], i["version"], i["template"], i["n_classes"], i["n_descriptors"], i["n_empty_classes"]) == (
        "frogs",
        2,
        "bare",
        4,
        9,
        1,
    )
    assert i["encoder_id"] == "fake-32-v1"
    assert i["dim"] == 32
    table = runner.invoke(cli, ["libraries", "--wide"]).stdout
    assert re.search(r"frogs\s+2\s+4\s+9\s+1\s+0\s+32\s+bare\s+Flat\s+1.000", table)  # ... empty, pairs, dim
    # the class inverted file by name, with its calibrated probe shown (its timing made to
    # beat the exact scan, which at 9 descriptors it would not: then it says "-> exact scan")
    calls = iter(range(10**6))
    monkeypatch.setattr(calibration, "median_ms", lambda fn, q: 0.1 if next(calls) % 2 == 0 else 1.0)
    runner.invoke(cli, ["ingest", str(tmp_path / "frogs.json"), "--library", "frogs", "--index", "ClassIVF"])
    assert re.search(
        r"frogs\s+3\s+.*ClassIVF \(probe 3\)\s+1.000\s+400 proxy image queries",
        runner.invoke(cli, ["libraries", "--wide"]).stdout,
    )
    assert json.loads(runner.invoke(cli, ["libraries", "--json"]).stdout)[0]["index_params"]["probe"] == 3


def snapshot(home: Path) -> dict[str, str]:
    """Every stored file and its content hash (SQLite's -wal/-shm scratch files aside)."""
    if not home.exists():
        return {}
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "not-image.png").write_text("hello, I am text")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), "green").save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "trunc.json").write_text('{"frog": ["green", "prot')
    (tmp_path / "list.json").write_text('["a"]')
    return {
        "missing image": (["explain", str(tmp_path / "nope.jpg"), "-l", "frogs"], "no such image file"),
        "not an image": (["explain", str(tmp_path / "not-image.png"), "-l", "frogs"], "not an image"),
        "truncated image": (["explain", str(tmp_path / "truncated.png"), "-l", "frogs"], "truncated or corrupt"),
        "unknown library": (["explain", str(good), "-l", "toads"], "no library 'toads'"),
        "unknown class": (
            ["explain", str(good), "-l", "frogs", "--compare", "tree frog", "tree frgo"],
            "no class 'tree frgo' (did you mean 'tree frog'",
        ),
        "bad aggregate": (["explain", str(good), "-l", "frogs", "-a", "median"], "median"),
        "truncated library": (["ingest", str(tmp_path / "trunc.json"), "-l", "x"], "looks truncated"),
        "not an object": (["ingest", str(tmp_path / "list.json"), "-l", "x"], "top level must be an object"),
        "missing library file": (["ingest", str(tmp_path / "absent.json"), "-l", "x"], "no such file"),
        "bad template": (["ingest", str(tmp_path / "frogs.json"), "-l", "x", "-t", "{colour}"], "template"),
    }


CASES = [
    "missing image",
    "not an image",
    "truncated image",
    "unknown library",
    "unknown class",
    "bad aggregate",
    "truncated library",
    "not an object",
    "missing library file",
    "bad template",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_nonzero_nothing_written(setup, case):
    runner, _, tmp_path = setup
    args, message = bad_inputs(tmp_path)[case]
    home = tmp_path / "home"
    before = snapshot(home)
    result = runner.invoke(cli, args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert snapshot(home) == before


def test_explain_on_an_empty_store_writes_nothing(tmp_path, fake):
    home = tmp_path / "fresh"
    result = CliRunner().invoke(cli, ["--home", str(home), "explain", "x.png", "-l", "frogs"])
    assert result.exit_code == 1
    assert "no whyclip data" in result.stderr
    assert not home.exists()


def test_token_limit_truncates_with_warning_or_refuses_when_strict(tmp_path, fake):
    long = " ".join(["very"] * 90) + " long descriptor"
    lib = tmp_path / "long.json"
    lib.write_text(json.dumps({"frog": [long, "green"]}))
    runner = CliRunner()
    strict = runner.invoke(cli, ["ingest", str(lib), "-l", "long", "--strict"])
    assert strict.exit_code == 1
    assert "exceed CLIP's 77-token limit" in strict.stderr
    assert not (tmp_path / "home").exists()
    ok = runner.invoke(cli, ["ingest", str(lib), "-l", "long"])
    assert ok.exit_code == 0
    assert "were truncated" in ok.stderr


def test_why_the_split_is_missing_is_said_once_on_stderr(setup):
    """Issue 21, item 13: the note that name vs description is not shown (no eval yet) goes
    to stderr once per command, not above every explanation; JSON still carries it."""
    runner, frog, tmp = setup
    images = [str(frog)] + [str(planted_image(tmp / f"f{i}.png", ["sticky toe pads"])) for i in range(2)]
    result = runner.invoke(cli, ["explain", *images, "--library", "frogs"])
    assert result.exit_code == 0, result.output
    assert "name vs description not shown" not in result.stdout
    assert result.stdout.count("(library frogs v1,") == 3  # every explanation is printed
    notes = [line for line in result.stderr.splitlines() if "name vs description not shown" in line]
    assert len(notes) == 1
    assert "whyclip eval DATASET --library frogs" in notes[0]
    (first, *_) = run_json(runner, ["explain", *images, "--library", "frogs", "--json"])
    assert "whyclip eval DATASET --library frogs" in first["name_description"]["note"]
